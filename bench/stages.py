"""Stage benchmark: rows/s of the ``ocr``, ``text_embed`` and ``objects`` stages inside ``mediascore score`` against
the same stage called in a plain loop on the same inputs, and the saving of OCR's text-presence check.

Inputs are ``--n`` images made by ``bench/stage_inputs.py``, deterministic from ``--seed`` (half with English
text, about half with a face); they go to an embedded S3 server.

Per stage, two sides process the same objects with the same stage class and config:

* ``score``: :func:`jobs.score.pipeline.run_score` in a fresh local Ray with ``--concurrency`` actors of one CPU
  each, the stage fused into the decode actors (``--fuse decode``, as ``configs/demo.yaml`` runs on small machines)
  or in a pool of its own after one decode actor (``--fuse stages``; decode and writer reserve no CPU, so the stage
  actors get one core each but share them with those two). Its time covers listing, S3 reads, decoding, Ray
  scheduling, the actors' start-up (imports, model loads) and the Parquet writes; not Ray's own start-up.
* ``loop``: one fresh process, no Ray: list, read and decode the objects in batches of the same size, call the
  stage on each batch. Its time covers the process's start and imports, listing, S3 reads, decoding and building
  the stage (model loads), so both sides pay the same fixed costs; it writes nothing.

The ratio is the score's rows/s over the loop's. With more than one actor the score runs that many stage instances
while the loop runs one, so on an idle machine the ratio can approach the actor count; ``per_actor`` divides it by
the actor count (1.0: every actor as fast as the loop). Both are printed with the core and actor counts. At small
``--n`` the fixed costs (actor start-up, Ray Data's scheduling) weigh more. Every engine is held to one thread
(ONNX Runtime through ``stages.ocr.threads``, OpenCV through ``OPENCV_FOR_THREADS_NUM``, torch through
``OMP_NUM_THREADS``), so one actor uses one core.

``cam`` runs the demo's localizer (``checkpoints/cam_lite0.pt``, EfficientNet-Lite0 at 224 px).

``text_embed`` reads OCR's text, so the score cannot run it alone: its score time is that of ``[ocr, text_embed]``
minus that of ``[ocr]`` (the two runs differ only by it; the difference carries the run-to-run noise of the OCR
runs, so small inputs give a noisy figure); the loop times the text_embed calls and its set-up directly, on the
loop's own OCR output. Both sides run text_embed on OCR's batches (the OCR batch size, not text_embed's own).

``text_check_saving``: OCR engines with the presence check (the default config) and without it (``presence_side:
0``) on the same decoded images, engine calls only (no reads, no decode, no set-up): ``1 - t_on / t_off``. With
it, ``skipped_with_text`` counts images with text that the check wrongly skipped (the recall it costs), and
``skipped_no_text_by_kind`` how many text-free images of each kind it skipped: the saving depends on the corpus,
as the check fires on faces and on some textures as well as on text. ``ocr_speed_vs_baseline``: the same engine
calls of the baseline engine of ``mediascore eval ocr --cases hard`` (no line grouping, DB boxes scored in their
rectangle) over the default engine's seconds (1.0: as fast; above: the default is faster).

Each side also records what it produced (OCR text, object count, token count per row): ``agree`` is the fraction
of rows where both sides got the same. The last line is one JSON object: ``ratio_ocr``, ``ratio_text_embed``,
``ratio_objects``, ``ratio_cam``, ``text_check_saving`` (null for stages not run) and the figures behind them.

    python bench/stages.py [--n 96] [--seed 0] [--stages ocr,text_embed,objects,cam] [--concurrency CORES]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np
from stage_inputs import Input, make_inputs  # bench/ is on the path when this file runs as a script

from jobs.common import storage
from jobs.common.config import ScoreConfig, load_config
from jobs.common.s3server import temporary_store
from jobs.common.session import init_ray
from jobs.media.decode import decode_image
from jobs.score.ingest import Decoder, MediaObject, list_inputs
from jobs.score.pipeline import ScoreSummary, run_score
from jobs.score.stages import build_stage

BUCKET = "s3://bench-stages"
INPUT = f"{BUCKET}/inputs"
STAGES = ("ocr", "text_embed", "objects", "cam")
AGREE_COLUMN = {"ocr": "ocr_text", "text_embed": "text_token_count", "objects": "obj_count", "cam": "cam_class"}
CAM_CHECKPOINT = "checkpoints/cam_lite0.pt"  # the demo's localizer (EfficientNet-Lite0, 224 px)


def bench_config(names: list[str], actors: int, cores: int, fuse: str) -> ScoreConfig:
    """The score config: one-thread engines, ``actors`` stage actors of one CPU each (less when they would not fit),
    every step on the batch size of the first stage."""
    batch = getattr(ScoreConfig().stages, names[0]).resources.batch_size
    per_actor = min(1.0, cores / actors)
    stage_res = {"num_cpus": per_actor, "batch_size": batch, "concurrency": actors}
    decode_res = stage_res if fuse == "decode" else {"num_cpus": 0, "batch_size": batch, "concurrency": 1}
    overrides = {
        "decode": {"rows_per_block": batch, "resources": decode_res},
        "stages": {
            "run": names,
            "fuse": fuse,
            **{n: {"resources": stage_res} for n in names},
            "ocr": {"threads": 1, "resources": stage_res},
            "cam": {"checkpoint": CAM_CHECKPOINT, "resources": stage_res},
        },
        "output": {"num_cpus": 0},
        "ray": {"num_cpus": cores},
    }
    return load_config(None, overrides)


def _objects_batch(chunk: list[MediaObject]) -> dict[str, np.ndarray]:
    return {
        "uri": np.array([m.uri for m in chunk]),
        "size": np.array([m.size for m in chunk]),
        "kind": np.array([m.kind for m in chunk]),
        "skip": np.array([""] * len(chunk)),
    }


def _loop(cfg: ScoreConfig) -> dict:
    """The stages of ``cfg.stages.run`` over the input in this process: seconds charged to each stage after the
    first (building it and calling it), rows, and each stage's value per row (for ``agree``)."""
    names = cfg.stages.run
    batch = cfg.decode.resources.batch_size
    spent = dict.fromkeys(names, 0.0)
    stages = {}
    for name in names:
        t = time.perf_counter()
        stages[name] = build_stage(name, cfg.stages)
        spent[name] += time.perf_counter() - t
    media = list_inputs(INPUT, cfg.listing).media
    decoder, values, rows = Decoder(cfg.decode), {name: {} for name in names}, 0
    for i in range(0, len(media), batch):
        for block in decoder(_objects_batch(media[i : i + batch])):
            for name in names:
                t = time.perf_counter()
                block = stages[name](block)
                spent[name] += time.perf_counter() - t
                values[name].update(zip(block["source_uri"], block[AGREE_COLUMN[name]], strict=True))
            rows += len(block["source_uri"])
    return {"seconds": {name: spent[name] for name in names[1:]}, "rows": rows, "values": values}


def plain_loop(cfg: ScoreConfig) -> dict:
    """:func:`_loop` in a fresh process, timed from its start: like each of the score's actors, it pays the
    interpreter's start and the imports (torch among them) as well as the model loads. The first stage is charged
    that, the listing, the reads and the decoding."""
    start = time.perf_counter()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        out = pool.submit(_loop, cfg).result()
    total = time.perf_counter() - start
    out["seconds"][cfg.stages.run[0]] = total - sum(out["seconds"].values())
    return out


def score(cfg: ScoreConfig, output: str) -> tuple[float, ScoreSummary, dict]:
    """``score`` in a fresh local Ray: seconds without Ray's own start-up, the summary and the written values."""
    import pyarrow.parquet as pq
    import ray

    init_ray(cfg.ray, None)
    try:
        start = time.perf_counter()
        summary = run_score(INPUT, output, cfg, echo=lambda line: None)
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    fs, path = storage.resolve(storage.join(output, "rows"))
    columns = ["source_uri", *(AGREE_COLUMN[name] for name in cfg.stages.run)]
    table = pq.read_table(path, filesystem=fs, columns=columns).to_pydict()
    values = {name: dict(zip(table["source_uri"], table[AGREE_COLUMN[name]], strict=True)) for name in cfg.stages.run}
    return seconds, summary, values


def _agree(loop: dict, scored: dict) -> float:
    same = sum(1 for uri, value in loop.items() if uri in scored and _same(value, scored[uri]))
    return round(same / max(len(loop), 1), 3)


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return str(a) == str(b) if isinstance(a, str) or isinstance(b, str) else int(a) == int(b)


def _figures(n: int, actors: int, loop_s: float, score_s: float | None, agree: float) -> dict:
    loop_rate = n / loop_s
    score_rate = n / score_s if score_s and score_s > 0 else None
    ratio = round(score_rate / loop_rate, 3) if score_rate else None
    return {
        "loop_s": round(loop_s, 2), "loop_rows_per_s": round(loop_rate, 2),
        "score_s": round(score_s, 2) if score_s is not None else None,
        "score_rows_per_s": round(score_rate, 2) if score_rate else None,
        "ratio": ratio, "per_actor": round(ratio / actors, 3) if ratio else None, "agree": agree,
    }  # fmt: skip


def _check(summary: ScoreSummary, n: int, label: str) -> None:
    if summary.rows_written != n or summary.errors_by_reason:
        print(f"[warn] score {label}: {summary.rows_written}/{n} rows, errors {summary.errors_by_reason}")


def bench_ocr_family(names: list[str], n: int, actors: int, cores: int, fuse: str) -> dict:
    """``ocr`` and, when asked, ``text_embed`` (by difference of two score runs, see the module docstring)."""
    chain = ["ocr", "text_embed"] if "text_embed" in names else ["ocr"]
    loop = plain_loop(bench_config(chain, actors, cores, fuse))
    ocr_s, summary, values = score(bench_config(["ocr"], actors, cores, fuse), f"{BUCKET}/score-ocr")
    _check(summary, n, "ocr")
    out = {"ocr": _figures(n, actors, loop["seconds"]["ocr"], ocr_s, _agree(loop["values"]["ocr"], values["ocr"]))}
    print(f"[ocr] {out['ocr']}")
    if "text_embed" in chain:
        both_s, summary, values = score(bench_config(chain, actors, cores, fuse), f"{BUCKET}/score-ocr-text_embed")
        _check(summary, n, "ocr,text_embed")
        agree = _agree(loop["values"]["text_embed"], values["text_embed"])
        te = _figures(n, actors, loop["seconds"]["text_embed"], both_s - ocr_s, agree)
        out["text_embed"] = {**te, "score_ocr_only_s": round(ocr_s, 2), "score_ocr_text_embed_s": round(both_s, 2)}
        if both_s <= ocr_s:
            print("[warn] text_embed: score [ocr, text_embed] was not slower than [ocr]: below the noise, no ratio")
        print(f"[text_embed] {out['text_embed']}")
    return out


def bench_single(name: str, n: int, actors: int, cores: int, fuse: str) -> dict:
    """A stage that reads only pixels (``objects``, ``cam``): the plain loop against the score."""
    cfg = bench_config([name], actors, cores, fuse)
    loop = plain_loop(cfg)
    seconds, summary, values = score(cfg, f"{BUCKET}/score-{name}")
    _check(summary, n, name)
    produced = loop["values"][name]
    out = _figures(n, actors, loop["seconds"][name], seconds, _agree(produced, values[name]))
    if name == "objects":
        out["objects_found"] = int(sum(int(c) for c in produced.values()))
    print(f"[{name}] {out}")
    return out


def _timed_ocr(engines: list, images: list[np.ndarray], batch: int) -> tuple[list[float], list[list]]:
    """Seconds and results of each engine over ``images``; the engines take turns on every batch, so that a change
    in the machine's load during the run hits them alike."""
    seconds, results = [0.0] * len(engines), [[] for _ in engines]
    for engine in engines:
        engine(images[:1])  # warm-up: the first ONNX Runtime call allocates
    for i in range(0, len(images), batch):
        for k, engine in enumerate(engines):
            start = time.perf_counter()
            results[k] += engine(images[i : i + batch])
            seconds[k] += time.perf_counter() - start
    return seconds, results


def _by_kind(inputs: list[Input], results: list) -> dict[str, str]:
    """Text-free images the check skipped, per background (``+face``: a face pasted in): ``"skipped/images"``."""
    tally: dict[str, list[int]] = {}
    for x, r in zip(inputs, results, strict=True):
        if not x.has_text:
            counts = tally.setdefault(x.background + ("+face" if x.has_face else ""), [0, 0])
            counts[0] += int(r.skipped)
            counts[1] += 1
    return {kind: f"{a}/{b}" for kind, (a, b) in sorted(tally.items())}


def bench_text_check(inputs: list[Input]) -> dict:
    """OCR engine calls with the presence check on (default config) and off, on the same decoded images."""
    from jobs.eval.ocr import BASELINE
    from jobs.media.ocr import OcrEngine

    cfg = bench_config(["ocr"], 1, 1, "decode")
    ocr_cfg, batch = cfg.stages.ocr, cfg.stages.ocr.resources.batch_size
    images = [decode_image(storage.read_bytes(f"{INPUT}/{x.key}"), cfg.decode.max_pixels)[0] for x in inputs]
    engines = [OcrEngine(ocr_cfg), OcrEngine(ocr_cfg.model_copy(update={"presence_side": 0}))]
    engines.append(OcrEngine(ocr_cfg.model_copy(update=BASELINE)))  # no line grouping, boxes scored fast
    (on_s, off_s, base_s), (on, off, _) = _timed_ocr(engines, images, batch)
    text = [x.has_text for x in inputs]
    out = {
        "on_s": round(on_s, 2), "off_s": round(off_s, 2), "saving": round(1 - on_s / off_s, 3),
        "baseline_s": round(base_s, 2), "speed_vs_baseline": round(base_s / on_s, 3),
        "text_images": sum(text), "no_text_images": len(text) - sum(text),
        "skipped_no_text": sum(r.skipped for r, t in zip(on, text, strict=True) if not t),
        "skipped_with_text": sum(r.skipped for r, t in zip(on, text, strict=True) if t),
        "text_found_off": sum(bool(r.lines) for r, t in zip(off, text, strict=True) if t),
        "lines_on_no_text_off": sum(len(r.lines) for r, t in zip(off, text, strict=True) if not t),
        "skipped_no_text_by_kind": _by_kind(inputs, on),
    }  # fmt: skip
    print(f"[text check] {out}")
    return out


def _table(results: dict, actors: int) -> str:
    head = f"{'stage':<11} {'loop rows/s':>11} {'score rows/s':>12} {'ratio':>7} {'/actor':>7} {'agree':>6}"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        if name not in STAGES:
            continue
        score_rate = "n/a" if r["score_rows_per_s"] is None else f"{r['score_rows_per_s']:.2f}"
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.3f}"
        per_actor = "n/a" if r["per_actor"] is None else f"{r['per_actor']:.3f}"
        lines.append(
            f"{name:<11} {r['loop_rows_per_s']:>11.2f} {score_rate:>12} {ratio:>7} {per_actor:>7} {r['agree']:>6.3f}"
        )
    lines.append(f"(loop: 1 process, 1 thread; score: {actors} stage actor(s), 1 thread each)")
    if "text_check" in results:
        c = results["text_check"]
        lines.append(
            f"text-presence check: {c['on_s']:.2f} s on vs {c['off_s']:.2f} s off, saving {c['saving']:.3f}; "
            f"skipped {c['skipped_no_text']}/{c['no_text_images']} text-free and {c['skipped_with_text']}/"
            f"{c['text_images']} text images"
        )
    return "\n".join(lines)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _one_thread() -> None:
    """One thread per engine, in the plain loop's process and in the Ray workers (both inherit this environment and
    import torch, which reads ``OMP_NUM_THREADS``, after this)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["OPENCV_FOR_THREADS_NUM"] = "1"
    cv2.setNumThreads(1)


def run(args: argparse.Namespace, cores: int) -> dict:
    names = [s for s in STAGES if s in args.stages.split(",")]
    inputs = make_inputs(args.n, args.seed)
    storage.ensure_bucket(INPUT)
    for x in inputs:
        storage.write_bytes(f"{INPUT}/{x.key}", x.data)
    print(
        f"[inputs] {len(inputs)} images, {sum(x.has_text for x in inputs)} with text, "
        f"{sum(x.has_face for x in inputs)} with a face; {cores} cores, {args.concurrency} actors, fuse {args.fuse}"
    )
    results: dict = {}
    if "ocr" in names or "text_embed" in names:
        results.update(bench_ocr_family(names, args.n, args.concurrency, cores, args.fuse))
        results["text_check"] = bench_text_check(inputs)
    for name in ("objects", "cam"):
        if name in names:
            results[name] = bench_single(name, args.n, args.concurrency, cores, args.fuse)
    return results


def main() -> None:
    cores = _cores()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=96, help="images, half of them with text")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default=",".join(STAGES), help="a subset of " + ",".join(STAGES))
    parser.add_argument("--concurrency", type=int, default=cores, help="stage actors in the score (default: cores)")
    parser.add_argument("--fuse", choices=["decode", "stages"], default="decode", help="where the stage actors run")
    args = parser.parse_args()
    unknown = set(args.stages.split(",")) - set(STAGES)
    if unknown or args.n < 2 or args.concurrency < 1:
        parser.error(f"--stages takes {','.join(STAGES)} (got {sorted(unknown)}); --n >= 2; --concurrency >= 1")
    _one_thread()

    started = time.perf_counter()
    with temporary_store():
        results = run(args, cores)
    print(_table(results, args.concurrency))
    figures = {
        "ratio_ocr": results.get("ocr", {}).get("ratio"),
        "ratio_text_embed": results.get("text_embed", {}).get("ratio"),
        "ratio_objects": results.get("objects", {}).get("ratio"),
        "ratio_cam": results.get("cam", {}).get("ratio"),
        "text_check_saving": results.get("text_check", {}).get("saving"),
        "ocr_speed_vs_baseline": results.get("text_check", {}).get("speed_vs_baseline"),
        "n": args.n, "seed": args.seed, "cores": cores, "actors": args.concurrency, "fuse": args.fuse,
        "seconds": round(time.perf_counter() - started, 1), **results,
    }  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
