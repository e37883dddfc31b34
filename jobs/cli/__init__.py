"""The ``mediascore`` command. Each subcommand parses its flags and calls one function; the work is elsewhere."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from jobs.cli.args import positive_int, uri_argument

EXIT_PENDING = 3  # `score` finished, but some inputs are pending (the store stayed unavailable): rerun it


def _cmd_s3(args: argparse.Namespace) -> int:
    from jobs.common.s3server import EmbeddedS3, export_lines

    server = EmbeddedS3(port=args.port)
    if args.action == "up":
        state = server.up()
        print(f"# SeaweedFS S3 on {state.endpoint} (pid {state.pid}, data in {state.data_dir})")
        print(export_lines(state))
    elif args.action == "down":
        print("stopped" if server.down() else "not running")
    else:
        state = server.state()
        if state is None:
            print("not running")
            return 1
        print(f"# running on {state.endpoint} (pid {state.pid}, data in {state.data_dir})")
        print(export_lines(state))
    return 0


def _cmd_make_corpus(args: argparse.Namespace) -> int:
    from jobs.corpus import make_corpus

    summary = make_corpus(
        args.output, seed=args.seed, scale=args.scale, workers=args.workers, progress=print, risk=args.risk
    )
    print(summary)
    return 0


def _cmd_make_multimodal(args: argparse.Namespace) -> int:
    from jobs.corpus.multimodal import make_multimodal

    modalities = [m for m in args.modalities.split(",") if m]
    uri = make_multimodal(args.output, seed=args.seed, samples=args.samples, size=args.size, modalities=modalities)
    print(f"multi-modal set of {args.samples} samples ({', '.join(modalities)}); manifest {uri}")
    return 0


def parse_stages(text: str | None) -> list[str] | None:
    """``None`` -> the config's list; ``"none"`` -> no stage (inventory run); ``"a,b"`` -> those stages."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return []
    return [s.strip() for s in text.split(",") if s.strip()]


def _cmd_score_samples(args: argparse.Namespace) -> int:
    from jobs.score.samples import run_score_samples

    if not args.checkpoint:
        print("mediascore: score --samples needs --checkpoint (from `mediascore train scorefusion`)", file=sys.stderr)
        return 2
    summary = run_score_samples(args.samples, args.output, args.checkpoint, args.missing, address=args.address)
    print(summary)
    print(json.dumps(summary.as_dict(), sort_keys=True))
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    if args.samples:
        return _cmd_score_samples(args)
    from jobs.common.config import load_config
    from jobs.score.pipeline import run_score

    stages = parse_stages(args.stages)  # validated once, as part of the config (stage names and their order)
    cfg = load_config(args.config, overrides=None if stages is None else {"stages": {"run": stages}})
    retry = [code.strip() for code in (args.retry_dead_letter or "").split(",") if code.strip()]
    summary = run_score(args.input, args.output, cfg, address=args.address, retry_dead_letter=retry)
    print(summary)
    print(json.dumps(summary.as_dict(), sort_keys=True))
    return EXIT_PENDING if summary.pending else 0


def _cmd_train(args: argparse.Namespace) -> int:
    from jobs.train.cam import load_train_settings, run_train_cam

    metrics = run_train_cam(load_train_settings(args.config), address=args.address)
    print(json.dumps(metrics, sort_keys=True, default=str))
    return 0


def _cmd_train_fusion(args: argparse.Namespace) -> int:
    from jobs.train.fusion import load_fusion_settings, run_train_fusion

    best = run_train_fusion(load_fusion_settings(args.config), address=args.address)
    print(json.dumps(best, sort_keys=True, default=str))
    return 0


def _cmd_train_scorefusion(args: argparse.Namespace) -> int:
    from jobs.train.scorefusion import load_scorefusion_settings, run_train_scorefusion

    record = run_train_scorefusion(load_scorefusion_settings(args.config), address=args.address)
    print(json.dumps(record, sort_keys=True, default=str))
    return 0


def _cmd_train_restore(args: argparse.Namespace) -> int:
    from jobs.train.restore import load_restore_settings, run_train_restore

    metrics = run_train_restore(load_restore_settings(args.config), address=args.address)
    print(json.dumps(metrics, sort_keys=True, default=str))
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from jobs.common.config import resolve_path
    from jobs.media.restorer import Restorer
    from jobs.restore import run_restore

    restorer = Restorer(resolve_path(args.checkpoint), tile=args.tile, overlap=args.overlap)
    report = run_restore(args.input, args.output, restorer)
    print(f"restored {len(report['restored'])}, failed {len(report['failed'])}; report: {args.output}/_restore.json")
    for failure in report["failed"]:
        print(f"  failed: {failure['source']}: {failure['error']}")
    summary = {"restored": len(report["restored"]), "failed": len(report["failed"]), "seconds": report["seconds"]}
    print(json.dumps(summary, sort_keys=True))
    return 0


def _cmd_train_demo(args: argparse.Namespace) -> int:
    from jobs.demo import train_demo_models

    only = tuple(m for m in args.models.split(",") if m) if args.models else None
    print(json.dumps(train_demo_models(only=only), sort_keys=True, default=str))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from serve.app import run_server
    from serve.config import load_serve_settings

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = load_serve_settings(args.config, overrides)
    if args.write_serve_config:
        import yaml

        from serve.app import serve_config

        header = (
            f"# Written by `mediascore serve --config {args.config} --write-serve-config FILE`.\n"
            "# `serve run` / `serve deploy` this file; a new checkpoint in a user_config is loaded in place.\n"
        )
        text = header + yaml.safe_dump(serve_config(settings), sort_keys=False)
        if args.write_serve_config == "-":
            print(text, end="")
        else:
            Path(args.write_serve_config).write_text(text)
        return 0
    run_server(settings, address=args.address, num_cpus=args.num_cpus)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from jobs.demo import run_demo

    run_demo(scale=args.scale, config=args.config)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from jobs.cli.evals import add_eval

    parser = argparse.ArgumentParser(prog="mediascore", description="Score, localize and restore media at scale.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_s3,
        _add_make_corpus,
        _add_score,
        _add_temporal,
        _add_train,
        add_eval,
        _add_restore,
        _add_serve,
        _add_demo,
    ):
        add(sub)
    return parser


def _add_s3(sub) -> None:
    s3 = sub.add_parser("s3", help="run the embedded S3 object store (SeaweedFS) on 127.0.0.1")
    s3.add_argument("action", choices=["up", "down", "status"])
    s3.add_argument("--port", type=int, default=None, help="S3 port (default: $MEDIASCORE_S3_PORT, else 8333)")
    s3.set_defaults(func=_cmd_s3)


def _add_make_corpus(sub) -> None:
    corpus = sub.add_parser("make-corpus", help="write the labelled sample corpus and its manifest")
    corpus.add_argument("--output", required=True, help="s3://bucket/prefix or a local folder")
    corpus.add_argument("--seed", type=int, default=0)
    corpus.add_argument("--scale", type=float, default=1.0, help="1: a few hundred images; 10: thousands")
    corpus.add_argument("--workers", type=int, default=8, help="parallel uploads")
    corpus.add_argument("--risk", action="store_true", help="add a binary risk label to every image (off: as before)")
    corpus.set_defaults(func=_cmd_make_corpus)
    multimodal = sub.add_parser("make-multimodal", help="write seed 003's multi-modal sample set and its manifest")
    multimodal.add_argument("--output", required=True, type=uri_argument, help="s3://bucket/prefix or a local folder")
    multimodal.add_argument("--samples", type=positive_int, default=400)
    multimodal.add_argument("--seed", type=int, default=0)
    multimodal.add_argument("--size", type=positive_int, default=64, help="side of the 2D modalities, pixels")
    multimodal.add_argument("--modalities", default="visible,infrared,depth,clip", help="comma-separated")
    multimodal.set_defaults(func=_cmd_make_multimodal)


def _add_score(sub) -> None:
    score = sub.add_parser("score", help="decode media, run the stages, write Parquet (resumable)")
    source = score.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input", type=uri_argument, help="URI of a prefix, or of a Parquet manifest with a uri column"
    )
    source.add_argument(
        "--samples",
        type=uri_argument,
        metavar="MANIFEST",
        help="a samples manifest (sample_id, modality, uri): multi-modal samples, scored with --checkpoint",
    )
    score.add_argument("--checkpoint", type=uri_argument, help="with --samples: a `train scorefusion` checkpoint")
    score.add_argument(
        "--missing",
        choices=("renormalise", "drop"),
        default="renormalise",
        help="with --samples: fuse what is there (weights renormalised) or give a sample with a gap no score",
    )
    score.add_argument("--output", required=True, type=uri_argument, help="URI of the output prefix")
    score.add_argument("--config", help="YAML config (see configs/score.yaml); default: built-in defaults")
    score.add_argument("--stages", help="comma-separated stages to run, or 'none' for an inventory run")
    score.add_argument("--address", help="address of an existing Ray cluster; default: a local Ray")
    score.add_argument(
        "--retry-dead-letter",
        metavar="CODES",
        help="comma-separated error codes (e.g. read_error,not_found): dead-lettered inputs with these codes are done "
        "again; the rest stay dead-lettered",
    )
    score.set_defaults(func=_cmd_score)


def _cmd_temporal(args: argparse.Namespace) -> int:
    from jobs.common.config import TemporalConfig
    from jobs.score.temporal import run_temporal

    cfg = TemporalConfig(enabled=True, column=args.column, n=args.n, mode=args.mode, max_gap=args.max_gap)
    try:
        result = run_temporal(args.output, cfg)
    except ValueError as exc:
        print(f"mediascore: {exc}", file=sys.stderr)
        return 2
    print(f"[temporal] {result['agreed_frames']}/{result['frames']} video rows agreed over N={cfg.n}; "
          f"{result['videos_with_class']}/{result['videos']} videos with a class; under {args.output}")  # fmt: skip
    print(json.dumps(result, sort_keys=True))
    return 0


def _add_temporal(sub) -> None:
    temporal = sub.add_parser(
        "temporal", help="N-frame agreement over a score output's video rows: temporal/ and videos/ tables"
    )
    temporal.add_argument("--output", required=True, type=uri_argument, help="URI of a finished score output")
    temporal.add_argument("--column", default="cam_class", help="the prediction column (default: cam_class)")
    temporal.add_argument("--n", type=int, default=5, help="consecutive agreeing frames to accept (default: 5)")
    temporal.add_argument("--mode", choices=["annotate", "filter"], default="annotate",
                          help="annotate: every video row with its run; filter: only the agreed rows")  # fmt: skip
    temporal.add_argument("--max-gap", type=float, default=1.5, help="a step over this many median steps breaks a run")
    temporal.set_defaults(func=_cmd_temporal)


def _add_train(sub) -> None:
    train = sub.add_parser("train", help="train a model with Ray Train")
    train_sub = train.add_subparsers(dest="model", required=True)
    jobs = (
        ("cam", "the CAM localizer, from image-level labels", _cmd_train),
        ("fusion", "the multimodal fusion scorer (risk), on cached features", _cmd_train_fusion),
        ("restore", "the restoration GAN (and its quality classifier)", _cmd_train_restore),
        (
            "scorefusion",
            "seed 003: a network per modality over 5 folds, fused with fitted weights",
            _cmd_train_scorefusion,
        ),
    )
    for name, help_text, func in jobs:
        job = train_sub.add_parser(name, help=help_text)
        job.add_argument("--config", required=True, help=f"YAML (see configs/train_{name}.yaml)")
        job.add_argument("--address", help="address of an existing Ray cluster; default: a local Ray")
        job.set_defaults(func=func)
    train_demo = train_sub.add_parser("demo", help="retrain the demo's checkpoints in checkpoints/ (make train)")
    train_demo.add_argument(
        "--models", help="comma-separated subset of cam,cam_tiny,fusion,restore (default: all, in order)"
    )
    train_demo.set_defaults(func=_cmd_train_demo)


def _add_restore(sub) -> None:
    restore = sub.add_parser("restore", help="restore every image and video under a URI into another")
    restore.add_argument("--input", required=True, help="URI of a prefix (or one object) of images and videos")
    restore.add_argument("--output", required=True, help="URI of the output prefix (same relative names)")
    restore.add_argument("--checkpoint", default="checkpoints/restore_tiny.pt", help="generator checkpoint URI")
    restore.add_argument("--tile", type=int, default=256, help="tile side in pixels (0: whole frames)")
    restore.add_argument("--overlap", type=int, default=32, help="pixels shared by neighbouring tiles")
    restore.set_defaults(func=_cmd_restore)


def _add_serve(sub) -> None:
    srv = sub.add_parser("serve", help="the HTTP API (Ray Serve): /v1/score, /v1/localize, /v1/ocr, /v1/restore")
    srv.add_argument("--config", default="configs/serve.yaml", help="serve config (models, limits, deployments)")
    srv.add_argument("--address", default=None, help="Ray cluster address; unset: a local Ray")
    srv.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray; unset: all of this machine's")
    srv.add_argument("--host", default=None, help="override the config's host")
    srv.add_argument("--port", type=int, default=None, help="override the config's port")
    srv.add_argument(
        "--write-serve-config",
        metavar="FILE",
        help="write the equivalent Serve config file (for `serve run` / `serve deploy`; - for stdout) and exit",
    )
    srv.set_defaults(func=_cmd_serve)


def _add_demo(sub) -> None:
    demo = sub.add_parser("demo", help="start S3, write the sample corpus, score it and print where results went")
    demo.add_argument("--scale", type=float, default=1.0)
    demo.add_argument("--config", default=None, help="score config; default configs/demo.yaml")
    demo.set_defaults(func=_cmd_demo)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from jobs.common.config import ConfigError
    from jobs.common.storage import InvalidURI
    from jobs.score.pipeline import OutputConflict

    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"mediascore: config error: {exc}", file=sys.stderr)
        return 2
    except (OutputConflict, FileNotFoundError, InvalidURI) as exc:
        print(f"mediascore: {exc}", file=sys.stderr)
        return 2
