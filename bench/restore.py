"""Restoration benchmark: tiled against untiled inference of the same generator, and the ``restore`` stage inside
``mediascore score`` against a plain loop.

* ``tiling_overhead``: seconds per frame of tiled inference (``--tile`` / ``--overlap``, the stage's defaults) over
  seconds per frame of one untiled call, same generator, same 1280x720 frame (a real photo resized), same process,
  ``--repeats`` calls each after one warm-up. Tiles recompute the overlaps, so the ratio is above 1; the
  ``megapixels_per_s`` figure is the tiled path (what the stage and ``mediascore restore`` run). Torch runs on
  ``--threads`` threads (1: the "one CPU core" of the goal).
* ``stage_ratio``: frames/s of ``mediascore score --stages restore`` in a fresh local Ray (the stage fused into
  ``--concurrency`` decode actors of one CPU each, as the demo runs) over frames/s of a plain loop in one process
  (read, decode, judge, restore, judge again, write) on the same ``--n`` images in an embedded S3 server. The
  threshold is 100 (quality numbers top out at 80), so every frame is restored on both sides. Both times include
  building the models.

    python bench/restore.py [--checkpoint checkpoints/restore_tiny.pt] [--n 64] [--repeats 3] [--threads 1]
        [--quality-checkpoint checkpoints/quality_tiny.pt]

The last line is one JSON object: ``tiling_overhead``, ``stage_ratio``, ``megapixels_per_s`` and the figures behind
them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time

import cv2
import numpy as np
from PIL import Image

from jobs.common import storage
from jobs.common.config import load_config
from jobs.common.s3server import temporary_store
from jobs.common.session import init_ray
from jobs.media.decode import decode_image
from jobs.score.pipeline import run_score
from jobs.score.stages.restore import RestoreStage
from jobs.train.data.restore import load_photo


def _frame(width: int = 1280, height: int = 720) -> np.ndarray:
    return cv2.resize(load_photo("astronaut"), (width, height), interpolation=cv2.INTER_CUBIC)


def time_tiling(checkpoint: str, tile: int, overlap: int, repeats: int) -> dict:
    import torch

    from jobs.media.quality import to_tensor
    from jobs.media.restorer import Restorer

    restorer = Restorer(checkpoint, tile=tile, overlap=overlap, device="cpu")
    frame = _frame()
    x = to_tensor(frame[None])
    seconds = {}
    for name, fn in {"untiled": lambda: restorer.model(x), "tiled": lambda: restorer(frame)}.items():
        with torch.no_grad():
            fn()  # warm-up
            started = time.perf_counter()
            for _ in range(repeats):
                fn()
        seconds[name] = (time.perf_counter() - started) / repeats
    megapixels = frame.shape[0] * frame.shape[1] / 1e6
    return {
        "seconds_untiled": round(seconds["untiled"], 3),
        "seconds_tiled": round(seconds["tiled"], 3),
        "tiling_overhead": round(seconds["tiled"] / seconds["untiled"], 3),
        "megapixels_per_s": round(megapixels / seconds["tiled"], 3),
        "megapixels_per_s_untiled": round(megapixels / seconds["untiled"], 3),
    }


def _inputs(prefix: str, n: int) -> None:
    rng = np.random.default_rng(0)
    photo = load_photo("astronaut")
    for i in range(n):
        y, x = rng.integers(0, 512 - 256, size=2)
        crop = cv2.resize(photo[y : y + 256, x : x + 256], (640, 480), interpolation=cv2.INTER_LINEAR)
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, format="JPEG", quality=60)
        storage.write_bytes(storage.join(prefix, f"img_{i:03d}.jpg"), buf.getvalue())


def time_stage(checkpoint: str, quality: str, n: int, concurrency: int, tile: int, overlap: int) -> dict:
    import ray

    prefix = "s3://bench-restore/inputs"
    storage.ensure_bucket(prefix)
    _inputs(prefix, n)
    restore = {"checkpoint": checkpoint, "quality_checkpoint": quality, "threshold": 100, "tile": tile}
    restore["overlap"] = overlap
    overrides = {
        "stages": {"run": ["restore"], "fuse": "decode", "restore": restore},
        "decode": {"resources": {"num_cpus": 1, "batch_size": 2, "concurrency": concurrency}},
    }
    cfg = load_config(overrides=overrides)
    init_ray(cfg.ray, None)
    started = time.perf_counter()
    run_score(prefix, "s3://bench-restore/score", cfg, echo=lambda _: None)
    score_s = time.perf_counter() - started
    ray.shutdown()
    started = time.perf_counter()
    loop_cfg = cfg.stages.restore.model_copy(update={"output": "s3://bench-restore/loop"})
    stage = RestoreStage(loop_cfg)
    for obj in storage.list_objects(prefix):
        image, _ = decode_image(storage.read_bytes(obj.uri), max_pixels=10**8)
        batch = {"source_uri": np.array([obj.uri]), "pixels": [image], "frame_index": np.array([-1])}
        stage.process_rows(batch, [0])
    loop_s = time.perf_counter() - started
    return {
        "frames": n,
        "score_frames_per_s": round(n / score_s, 3),
        "loop_frames_per_s": round(n / loop_s, 3),
        "stage_ratio": round(loop_s / score_s, 3),
        "concurrency": concurrency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="checkpoints/restore_tiny.pt")
    parser.add_argument("--quality-checkpoint", default="checkpoints/quality_tiny.pt")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the score's actors inherit it
    checkpoint = os.path.abspath(args.checkpoint)
    tiling = time_tiling(checkpoint, args.tile, args.overlap, args.repeats)
    print(f"tiling: {tiling}", flush=True)
    with temporary_store():
        quality = os.path.abspath(args.quality_checkpoint)
        stage = time_stage(checkpoint, quality, args.n, args.concurrency, args.tile, args.overlap)
    print(f"stage:  {stage}", flush=True)
    result = tiling | stage | {"threads": args.threads, "cores": os.cpu_count(), "tile": args.tile}
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
