"""``mediascore eval ...``: the evaluation subcommands, each parsing its flags and calling one function in
``jobs/eval``; the last line each prints is one JSON object."""

from __future__ import annotations

import argparse
import json
import sys

from jobs.cli.args import positive_int, uri_argument


def _cmd_eval_restore(args: argparse.Namespace) -> int:
    from jobs.eval.restore import load_eval_restore_settings, run_eval_restore

    result = run_eval_restore(load_eval_restore_settings(args.config))
    print(json.dumps(result, sort_keys=True))
    return 0


def _cmd_eval_scorefusion(args: argparse.Namespace) -> int:
    from jobs.eval.scorefusion import run_eval_scorefusion
    from jobs.train.scorefusion import load_scorefusion_settings

    overrides = {"data": {"manifest": args.manifest}} if args.manifest else None
    settings = load_scorefusion_settings(args.config, overrides)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    print(json.dumps(run_eval_scorefusion(settings, args.output, seeds), sort_keys=True))
    return 0


def _cmd_eval_fusion(args: argparse.Namespace) -> int:
    from jobs.eval.fusion import ABLATIONS, run_eval_fusion
    from jobs.train.fusion import load_fusion_settings

    ablations = ABLATIONS if args.ablations is None else tuple(a for a in args.ablations.split(",") if a)
    result = run_eval_fusion(load_fusion_settings(args.config), ablations, seeds=args.seeds)
    print(json.dumps(result, sort_keys=True))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from jobs.eval.cam import run_eval_cam

    result = run_eval_cam(
        args.checkpoint, args.manifest, args.split, tuple(args.image_types.split(",")), args.cam_class,
        by_image_type=args.by_image_type,
    )  # fmt: skip
    for key, value in result.items():
        print(f"{key:<14} {value}")
    print(json.dumps(result, sort_keys=True))
    return 0


def _cmd_eval_multitype(args: argparse.Namespace) -> int:
    from jobs.eval.multitype import VARIANTS, run_eval_multitype

    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        print(f"mediascore: unknown variants {sorted(unknown)}; valid: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    ratio = {k: float(v) for k, v in (part.split("=") for part in args.type_ratio.split(","))}
    seeds = [int(s) for s in args.seeds.split(",")]
    result = run_eval_multitype(args.config, seeds, args.output, variants, ratio, args.manifest, args.video_fps)
    print(json.dumps(result, sort_keys=True))
    return 0


def _cmd_eval_objects(args: argparse.Namespace) -> int:
    from jobs.common.config import load_config
    from jobs.eval.objects import format_table, run_eval_objects

    cfg = load_config(args.config).stages.objects if args.config else None
    result = run_eval_objects(args.manifest, cfg)
    print(format_table(result))
    print(json.dumps(result, sort_keys=True))
    return 0


def _cmd_eval_ocr(args: argparse.Namespace) -> int:
    from jobs.common.config import load_config
    from jobs.eval.ocr import run_eval_ocr, run_eval_ocr_cases, summary_table

    cfg = load_config(args.config).stages.ocr if args.config else None
    if args.cases == "hard":
        result = run_eval_ocr_cases(cfg, per_category=args.per_category, seed=args.seed)
    elif not args.manifest:
        raise SystemExit("eval ocr: --manifest is required for --cases corpus")
    else:
        result = run_eval_ocr(args.manifest, tuple(args.splits.split(",")), cfg, limit=args.limit)
        print(summary_table(result))
    print(json.dumps(result, sort_keys=True))
    return 0


def add_eval(sub) -> None:
    evaluate = sub.add_parser("eval", help="evaluate a model; the last line is one JSON object")
    eval_sub = evaluate.add_subparsers(dest="model", required=True)
    eval_cam = eval_sub.add_parser("cam", help="top-1, MaxBoxAcc at IoU 0.5/0.7, MaxBoxAccV2, PxAP")
    eval_cam.add_argument("--checkpoint", required=True, help="URI of a checkpoint from `mediascore train cam`")
    eval_cam.add_argument("--manifest", help="corpus manifest URI; default: the one the checkpoint was trained on")
    eval_cam.add_argument("--split", default="test")
    eval_cam.add_argument("--image-types", default="photo", help="comma-separated: photo,sketch,cartoon")
    eval_cam.add_argument("--cam-class", choices=["gt", "pred"], default="gt", help="CAM of the GT or predicted class")
    eval_cam.add_argument("--by-image-type", action="store_true", help="the figures per image type too")
    eval_cam.set_defaults(func=_cmd_eval)
    _add_eval_multitype(eval_sub)
    eval_objects = eval_sub.add_parser("objects", help="face and person recall and precision at IoU 0.5")
    eval_objects.add_argument("--manifest", help="corpus manifest URI: its images count false positives")
    eval_objects.add_argument("--config", help="score YAML whose stages.objects picks the detector; default: opencv")
    eval_objects.set_defaults(func=_cmd_eval_objects)

    eval_fusion = eval_sub.add_parser("fusion", help="AUROC, accuracy, F1 against single-modality and no-weight runs")
    eval_fusion.add_argument("--config", required=True, help="the train fusion YAML (trains what is missing)")
    eval_fusion.add_argument("--ablations", help="comma-separated subset of text,style,object,key,no_weights")
    eval_fusion.add_argument(
        "--seeds", type=positive_int, default=1, help="train every model N times (seeds seed..seed+N-1): means, stds"
    )
    eval_fusion.set_defaults(func=_cmd_eval_fusion)

    _add_eval_scorefusion(eval_sub)

    eval_restore = eval_sub.add_parser("restore", help="PSNR/SSIM of input, classical, L1 and GAN on held-out photos")
    eval_restore.add_argument("--config", required=True, help="YAML (see configs/eval_restore.yaml)")
    eval_restore.set_defaults(func=_cmd_eval_restore)

    eval_ocr = eval_sub.add_parser("ocr", help="character error rate and line recall, English and Chinese")
    eval_ocr.add_argument(
        "--cases",
        choices=("corpus", "hard"),
        default="corpus",
        help="the corpus's rendered texts, or the harder cases made here (jobs/corpus/ocr_cases.py)",
    )
    eval_ocr.add_argument("--manifest", help="corpus manifest URI (mediascore make-corpus), for --cases corpus")
    eval_ocr.add_argument("--per-category", type=int, default=10, help="--cases hard: images per category")
    eval_ocr.add_argument("--seed", type=int, default=0, help="--cases hard: the seed that makes the cases")
    eval_ocr.add_argument("--splits", default="test", help="comma-separated splits")
    eval_ocr.add_argument("--config", help="score YAML whose stages.ocr sets the engine; default: the defaults")
    eval_ocr.add_argument("--limit", type=int, help="at most this many images")
    eval_ocr.set_defaults(func=_cmd_eval_ocr)


def _add_seeded_eval(eval_sub, name: str, help: str, config: str, what: str):
    """An eval that trains one run per seed under ``--output``: the flags every such eval shares."""
    parser = eval_sub.add_parser(name, help=help)
    parser.add_argument("--config", default=config, help=f"the base training config (default: {config})")
    parser.add_argument("--output", required=True, type=uri_argument, help="where the training runs go")
    parser.add_argument("--manifest", help=f"the {what} manifest (default: the config's data.manifest)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default: 0,1,2)")
    return parser


def _add_eval_multitype(eval_sub) -> None:
    multitype = _add_seeded_eval(
        eval_sub, "multitype", "seed 002: photo-only, mixed, stratified and adversarial training per image type, over "
        "seeds", "configs/eval_multitype.yaml", "corpus",
    )  # fmt: skip
    multitype.add_argument("--variants", default="photo_only,mixed,stratified,adversarial")
    multitype.add_argument("--type-ratio", default="photo=5,sketch=1,cartoon=1", help="training mix (seed 002: 5:1:1)")
    multitype.add_argument("--video-fps", type=float, default=5.0, help="frames per second sampled from each video")
    multitype.set_defaults(func=_cmd_eval_multitype)


def _add_eval_scorefusion(eval_sub) -> None:
    eval_sf = _add_seeded_eval(
        eval_sub, "scorefusion", "seed 003: AUROC per modality, equal, fitted (out of fold) and test-picked weights",
        "configs/train_scorefusion.yaml", "samples",
    )  # fmt: skip
    eval_sf.set_defaults(func=_cmd_eval_scorefusion)
