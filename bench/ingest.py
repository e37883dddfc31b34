"""Ingestion benchmark: sampled decode vs full decode, ``score`` vs a plain loop, and memory at 1x vs 4x.

Runs against its own embedded S3 server and corpus. Every figure is a ratio against a baseline run in the same
process, so runs on different machines compare. The last line is one JSON object:
``sampled_vs_full_decode``, ``score_vs_plain_loop`` (at the largest size), ``score_vs_plain_loop_marginal`` (rows/s
between the two largest sizes, so that start-up costs cancel), ``peak_mem_ratio_4x`` and the raw numbers behind them.

    python bench/ingest.py [--scale 1.0] [--video-seconds 60] [--sizes 1,4,16]
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from jobs.common import storage
from jobs.common.config import VideoSampling, load_config
from jobs.common.s3server import temporary_store
from jobs.media.decode import VideoFrame, sample_video
from jobs.score.ingest import Decoder, list_inputs
from jobs.score.output import Writer
from jobs.score.stages.quality import QualityStage

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def make_video(seconds: int, fps: int = 25, gop: int = 50, size: tuple[int, int] = (640, 360)) -> bytes:
    """An H.264 MP4 with moving content (so that frames differ and decoding costs what it costs)."""
    import av

    width, height = size
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(gop), "x264-params": "scenecut=0", "preset": "veryfast"}
        yy, xx = np.mgrid[0:height, 0:width]
        for i in range(seconds * fps):
            img = np.stack([(xx + 4 * i) % 256, (yy + 2 * i) % 256, (xx + yy + i) % 256], axis=-1).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def full_decode_then_sample(data: bytes, interval_s: float) -> list[int]:
    """The baseline: decode and convert every frame, keep the first at or after each target."""
    import av

    kept, next_target = [], 0.0
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            pixels = frame.to_ndarray(format="rgb24")
            t = float(frame.pts * stream.time_base)
            if t + 1e-3 >= next_target:
                kept.append(pixels.shape[0])
                next_target += interval_s
    return kept


def _time(fn, repeats: int = 2) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_decode(seconds: int) -> dict:
    data = make_video(seconds)
    out = {}
    for name, sampling in {
        "interval_1s": VideoSampling(policy="interval", interval_s=1.0),
        "interval_5s": VideoSampling(policy="interval", interval_s=5.0),
        "keyframes": VideoSampling(policy="keyframes", max_frames=10_000),
    }.items():
        sampled_s, frames = _time(
            lambda s=sampling: [f for f in sample_video(io.BytesIO(data), s) if isinstance(f, VideoFrame)]
        )
        interval = sampling.interval_s if sampling.policy == "interval" else 2.0
        full_s, kept = _time(lambda i=interval: full_decode_then_sample(data, i))
        out[name] = {
            "frames": len(frames),
            "sampled_fps": round(len(frames) / sampled_s, 2),
            "full_fps": round(len(kept) / full_s, 2),
            "ratio": round((len(frames) / sampled_s) / (len(kept) / full_s), 2),
        }
        print(f"[decode] {name}: {out[name]}")
    return out


def plain_loop(corpus: str, out: str, cfg) -> int:
    """The same work as ``score`` in one process: list, read, decode, quality statistics, write Parquet."""
    listing = list_inputs(corpus, cfg.listing)
    decoder, stage, writer = Decoder(cfg.decode), QualityStage(cfg.stages.quality), Writer(out)
    rows = 0
    step = cfg.output.rows_per_file
    pending: list[dict] = []
    for m in listing.media:
        batch = {
            "uri": np.array([m.uri]),
            "size": np.array([m.size]),
            "kind": np.array([m.kind]),
            "skip": np.array([""]),
        }
        for block in decoder(batch):
            pending.append(stage(block))
            rows += int((~block["_dead"]).sum())  # rows written, as score counts them
        if sum(len(b["source_uri"]) for b in pending) >= step:
            writer(_concat(pending))
            pending = []
    if pending:
        writer(_concat(pending))
    return rows


def _concat(blocks: list[dict]) -> dict:
    merged = {}
    for key in blocks[0]:
        if blocks[0][key].dtype == object:
            merged[key] = np.empty(sum(len(b[key]) for b in blocks), dtype=object)
            merged[key][:] = [v for b in blocks for v in b[key]]
        else:
            merged[key] = np.concatenate([b[key] for b in blocks])
    return merged


def _role(proc, me: int) -> str:
    """A process's part in the run: the driver, a Ray worker by its title, Ray's daemons, the S3 server."""
    if proc.pid == me:
        return "driver"
    cmd = proc.cmdline()
    if cmd and cmd[0].startswith("ray::"):
        title = cmd[0].split()[0][5:]  # e.g. MapWorker(MapBatches(_DecodeAndStages)), or IDLE
        return title[: title.rindex(")") + 1] if ")." in title else title  # not the method it runs now
    if proc.name() in ("raylet", "gcs_server", "weed"):
        return proc.name()
    script = next((Path(a).name for a in cmd[1:3] if a.endswith(".py")), "")
    return script.removesuffix(".py") or proc.name()


class ProcessMonitor:
    """Samples this process and all its descendants (the local Ray, the S3 server): the peak of their proportional
    set size together, and each process's CPU seconds, summed by role at the end. Reading every process's PSS is
    not free: the sampling thread's own CPU is reported as ``bench_monitor``, apart from the driver's."""

    def __init__(self, interval_s: float = 1.0):
        self.interval_s, self.peak, self._stop = interval_s, 0, threading.Event()
        self._cpu: dict[int, list] = {}  # pid -> [role, CPU seconds at the first sample, at the last]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._seen: set[int] = set()
        self._own_cpu = 0.0

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        self._seen = {p.pid for p in [me, *me.children(recursive=True)]}
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    info = proc.memory_full_info()
                    total += getattr(info, "pss", info.rss)
                    times = proc.cpu_times()
                    seconds = times.user + times.system
                    if proc.pid not in self._cpu:  # a new process counts from zero, one already running from now
                        self._cpu[proc.pid] = ["IDLE", seconds if proc.pid in self._seen else 0.0, 0.0]
                    entry = self._cpu[proc.pid]
                    role = _role(proc, me.pid)
                    entry[0] = entry[0] if role == "IDLE" else role  # a pooled worker is IDLE before its first task
                    entry[2] = seconds
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak = max(self.peak, total)
            self._own_cpu = time.thread_time()
            self._stop.wait(self.interval_s)

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds per role while the monitor ran."""
        out: collections.Counter = collections.Counter()
        for role, first, last in self._cpu.values():
            out[role] += last - first
        out["driver"] -= self._own_cpu
        out["bench_monitor"] = self._own_cpu
        return {k: round(v, 2) for k, v in out.most_common()}

    def __enter__(self) -> ProcessMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _score(corpus: str, out: str, cfg) -> tuple[float, object]:
    """``score`` in a fresh local Ray; returns seconds without Ray's own start-up (its actors' start-up counts),
    and the summary."""
    import ray

    from jobs.common.session import init_ray
    from jobs.score.pipeline import run_score

    init_ray(cfg.ray, None)
    try:
        start = time.perf_counter()
        summary = run_score(corpus, out, cfg, echo=lambda line: None)
        return time.perf_counter() - start, summary
    finally:
        ray.shutdown()


def replicate(corpus: str, target: str, copies: int) -> None:
    """``copies`` server-side copies of the corpus's media under ``target``."""
    client = storage.s3_client()
    src_bucket, _ = storage.split_s3(corpus)
    for i in range(copies):
        for obj in storage.list_objects(corpus):
            _, key = storage.split_s3(obj.uri)
            dst_bucket, dst_key = storage.split_s3(storage.join(target, f"copy{i}", obj.uri[len(corpus) + 1 :]))
            client.copy_object(Bucket=dst_bucket, Key=dst_key, CopySource={"Bucket": src_bucket, "Key": key})


def _marginal(small: dict, large: dict, seconds_key: str) -> float:
    """Rows per second between two sizes: what each further row costs once start-up is paid."""
    return (large["rows"] - small["rows"]) / max(large[seconds_key] - small[seconds_key], 1e-9)


def bench_score(corpus: str, sizes: list[int], batches_per_task: int | None = None) -> dict:
    """``score`` at each size (a fresh local Ray each time) and the plain loop at the two largest."""
    overrides: dict = {"stages": {"run": ["quality"]}}  # ingestion, not the models
    if batches_per_task:
        overrides["decode"] = {"batches_per_task": batches_per_task}
    cfg = load_config(DEMO_CONFIG, overrides=overrides)
    runs: dict = {}
    for n in sizes:
        uri = f"s3://bench/x{n}"
        replicate(corpus, uri, n)
        with ProcessMonitor() as mon:
            seconds, summary = _score(uri, f"s3://bench/score-{n}x", cfg)
        runs[f"{n}x"] = {
            "rows": summary.rows_written, "images": summary.images, "score_s": round(seconds, 2),
            "rows_per_s": round(summary.rows_written / seconds, 2), "peak_mb": round(mon.peak / 2**20, 1),
            "cpu_s_by_process": mon.cpu_by_role(),
        }  # fmt: skip
        print(f"[score] {n}x: {runs[f'{n}x']}")
    for n in sizes[-2:]:
        with ProcessMonitor() as mon:
            loop_s, loop_rows = _time(lambda n=n: plain_loop(f"s3://bench/x{n}", f"s3://bench/plain-{n}x", cfg), 1)
        runs[f"plain_loop_{n}x"] = {
            "rows": loop_rows, "s": round(loop_s, 2), "rows_per_s": round(loop_rows / loop_s, 2),
            "cpu_s_by_process": mon.cpu_by_role(),
        }  # fmt: skip
        print(f"[score] plain loop {n}x: {runs[f'plain_loop_{n}x']}")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="corpus scale (1: ~300 images, 12 videos)")
    parser.add_argument("--video-seconds", type=int, default=60)
    parser.add_argument("--sizes", default="1,4,16", help="corpus copies to score, comma-separated, ascending")
    parser.add_argument("--batches-per-task", type=int, help="override decode.batches_per_task (default: the config's)")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    if len(sizes) < 2:
        parser.error("--sizes needs at least two sizes (the marginal rate is taken between the two largest)")

    results: dict = {"decode": bench_decode(args.video_seconds)}
    with temporary_store():
        from jobs.corpus import make_corpus

        corpus = "s3://bench/corpus"
        make_corpus(corpus, seed=0, scale=args.scale)
        results["score"] = runs = bench_score(corpus, sizes, args.batches_per_task)
    small, large = sizes[-2], sizes[-1]
    marginal_score = _marginal(runs[f"{small}x"], runs[f"{large}x"], "score_s")
    marginal_loop = _marginal(runs[f"plain_loop_{small}x"], runs[f"plain_loop_{large}x"], "s")
    ref = 4 if 4 in sizes else large
    figures = {
        "sampled_vs_full_decode": results["decode"]["interval_1s"]["ratio"],
        "score_vs_plain_loop": round(runs[f"{large}x"]["rows_per_s"] / runs[f"plain_loop_{large}x"]["rows_per_s"], 2),
        "score_vs_plain_loop_marginal": round(marginal_score / marginal_loop, 2),
        "marginal_rows_per_s": {"score": round(marginal_score, 2), "plain_loop": round(marginal_loop, 2)},
        "sizes": sizes,
        "peak_mem_ratio_4x": round(runs[f"{ref}x"]["peak_mb"] / runs[f"{sizes[0]}x"]["peak_mb"], 3),
        **results,
    }
    print(json.dumps(figures, sort_keys=False))


if __name__ == "__main__":
    main()
