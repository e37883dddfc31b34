"""Load test of ``/v1/score``: Serve at batch size 1, Serve at the configured batch size, and a plain
single-process FastAPI + PyTorch server running the same model code, all in one run on 127.0.0.1.

* The Serve application is the one ``mediascore serve --config`` starts (``--config``, default
  ``configs/serve.yaml``), with one replica per deployment (autoscaling off, so replica counts do not differ
  between phases). Phase ``batch1`` sets the score deployment's ``max_batch_size`` to 1; phase ``batched``
  redeploys with ``--batch`` (an in-place ``user_config`` change: same replicas, same loaded models).
* The plain server is a subprocess: uvicorn + FastAPI, one process, the ``ScoreModel`` stages built once and
  called per request under a lock (PyTorch and ONNX Runtime use all cores inside that one call).
* The load generator: ``--concurrency`` asyncio clients (aiohttp) sending ``--requests`` requests in all, cycling
  over a fixed set of images (photos with and without text), and stopping at ``--max-seconds`` whatever is left.
  Each phase starts after ``--warmup`` requests that are not counted.
* ``shed_503``: a burst of ``--burst`` concurrent requests against the score deployment redeployed with
  ``max_ongoing_requests`` and ``max_queued_requests`` at ``--shed-queue``; the count of 503 answers (each checked
  for Retry-After) and the p99 of the accepted ones.
* ``stage_ms_batch1`` / ``stage_ms_batch<N>`` (route ``score``): each stage's milliseconds per image in one
  process on one thread at batch size 1 and at ``--batch``; the part of the work that batching can speed up.
* ``replica_mem_growth``: resident memory of the Serve replicas (sum over their processes) after both load phases
  over after the first warm-up.

    python bench/serve_load.py [--requests 96] [--concurrency 16] [--batch 8] [--cores 2]

The last line is one JSON object with ``rps_batch1``, ``rps_batched``, ``p99_batch1_ms``, ``p99_batched_ms``,
``rps_plain_server``, ``p99_plain_ms``, ``shed_503``, ``replica_mem_growth`` and the figures behind them.
"""

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
from PIL import Image, ImageDraw


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _images(n: int = 8) -> list[bytes]:
    """JPEG bodies: scikit-image photos at 480 px wide, every other one with a line of text drawn on it."""
    import cv2

    from jobs.corpus.fonts import font
    from jobs.train.data.restore import load_photo

    names = ["astronaut", "coffee", "chelsea", "rocket"]
    bodies = []
    for i in range(n):
        photo = load_photo(names[i % len(names)])
        height = int(photo.shape[0] * 480 / photo.shape[1])
        img = Image.fromarray(cv2.resize(photo, (480, height), interpolation=cv2.INTER_AREA))
        if i % 2 == 0:
            ImageDraw.Draw(img).text((16, 16), f"SALE {10 * i}% OFF", fill="white", font=font("en", 36))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        bodies.append(buf.getvalue())
    return bodies


def _percentiles(latencies_ms: list[float]) -> dict:
    if not latencies_ms:
        return {"p50": None, "p95": None, "p99": None}
    return {f"p{q}": round(float(np.percentile(latencies_ms, q)), 1) for q in (50, 95, 99)}


async def _load(url: str, bodies: list[bytes], total: int, concurrency: int, max_seconds: float) -> dict:
    import aiohttp

    latencies, statuses, retry_after = [], [], []
    counter = iter(range(total))
    deadline = time.perf_counter() + max_seconds

    async def client(session):
        for i in counter:
            if time.perf_counter() > deadline:
                return
            started = time.perf_counter()
            async with session.post(url, data=bodies[i % len(bodies)], headers={"Content-Type": "image/jpeg"}) as r:
                await r.read()
                statuses.append(r.status)
                if r.status == 200:
                    latencies.append((time.perf_counter() - started) * 1000)
                elif r.status == 503:
                    retry_after.append(bool(r.headers.get("Retry-After")))

    timeout = aiohttp.ClientTimeout(total=max_seconds + 120)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    ok = statuses.count(200)
    return {
        "sent": len(statuses),
        "ok": ok,
        "status_503": statuses.count(503),
        "other_errors": len(statuses) - ok - statuses.count(503),
        "retry_after_on_all_503": all(retry_after),
        "seconds": round(seconds, 2),
        "rps": round(ok / seconds, 3),
        **_percentiles(latencies),
    }


def run_load(url: str, bodies: list[bytes], total: int, concurrency: int, max_seconds: float) -> dict:
    return asyncio.run(_load(url, bodies, total, concurrency, max_seconds))


def _replica_rss() -> int:
    """Resident bytes of this machine's Serve replica processes (Ray titles them ``ray::ServeReplica:<app>:...``)."""
    import psutil

    total = 0
    for proc in psutil.process_iter(["cmdline", "memory_info"]):
        if any("ServeReplica:mediascore" in part for part in proc.info["cmdline"] or []):
            total += proc.info["memory_info"].rss
    return total


def plain_server(port: int, config: str, route: str) -> None:
    """A single-process FastAPI + PyTorch server: the same model code as the Serve deployment of ``route``, one
    request at a time. (This file does not postpone annotations: FastAPI must see ``Request``, not a string.)"""
    import uvicorn
    from fastapi import FastAPI, HTTPException, Request

    from jobs.media.decode import DecodeError, decode_image
    from serve.config import load_serve_settings
    from serve.models import MODELS

    settings = load_serve_settings(config)
    model = MODELS[route]()
    runner, _ = model.load(settings.models.resolved())
    lock = threading.Lock()
    app = FastAPI()

    @app.post(f"/v1/{route}")
    async def predict(request: Request):
        data = await request.body()
        try:
            image, _ = decode_image(data, settings.max_pixels)
        except DecodeError as exc:
            raise HTTPException(415, detail=str(exc)) from None

        def work():
            with lock:
                return model.run(runner, [image], [{"mask": "none"}])[0]

        return await asyncio.to_thread(work)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def stage_costs(config: str, bodies: list[bytes], batch: int, repeats: int = 2) -> dict:
    """Milliseconds per image of each ``/v1/score`` stage, in this process on one thread, at batch size 1 and at
    ``batch``: which part of the work batching can speed up at all."""
    import torch

    from jobs.media.decode import decode_image
    from jobs.score.stages import STAGES
    from serve.config import load_serve_settings
    from serve.models import ScoreModel, batch_from_images

    torch.set_num_threads(1)
    models = load_serve_settings(config).models.resolved()
    stages = {name: STAGES[name](getattr(models, name)) for name in ScoreModel.sections}
    images = [decode_image(b, 10**9)[0] for b in bodies]
    out = {}
    for size in (1, batch):
        totals = dict.fromkeys(stages, 0.0)
        for _ in range(repeats):
            for i in range(0, len(images), size):
                rows = batch_from_images(images[i : i + size])
                for name, stage in stages.items():
                    started = time.perf_counter()
                    rows = stage(rows)
                    totals[name] += time.perf_counter() - started
        out[f"stage_ms_batch{size}"] = {k: round(v * 1000 / (repeats * len(images)), 1) for k, v in totals.items()}
    return out


def _wait_http(url: str, timeout_s: float) -> None:
    import requests

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/serve.yaml")
    parser.add_argument("--route", default="score", choices=["score", "localize", "ocr"], help="the route loaded")
    parser.add_argument("--requests", type=int, default=96, help="counted requests per phase")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8, help="the batched phase's max_batch_size")
    parser.add_argument("--wait-ms", type=float, default=20.0, help="the batched phase's batch_wait_timeout")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=180.0, help="per phase")
    parser.add_argument("--burst", type=int, default=48)
    parser.add_argument("--shed-queue", type=int, default=4)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--plain-server", type=int, default=None, help=argparse.SUPPRESS)  # the subprocess
    args = parser.parse_args()
    if args.plain_server:
        plain_server(args.plain_server, args.config, args.route)
        return

    import ray
    from ray import serve

    from serve.app import start
    from serve.config import load_serve_settings
    from serve.models import MODELS

    bodies = _images(max(8, args.batch))
    costs = stage_costs(args.config, bodies, args.batch) if args.route == "score" else {}
    print(f"stage costs: {costs}", file=sys.stderr)
    port = _free_port()
    fixed = {"min_replicas": 1, "max_replicas": 1, "max_ongoing_requests": 2 * args.concurrency,
             "max_queued_requests": 4 * args.concurrency}  # fmt: skip

    def settings(**score):
        return load_serve_settings(args.config, {"port": port, f"{args.route}_deployment": fixed | score})

    ray.init(address="local", num_cpus=args.cores, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    url = start(settings(max_batch_size=1)) + f"/v1/{args.route}" + ("?mask=none" if args.route == "localize" else "")
    handle = serve.get_deployment_handle(MODELS[args.route].__name__, "mediascore")
    results: dict = {}
    run = dict(bodies=bodies, total=args.requests, concurrency=args.concurrency, max_seconds=args.max_seconds)
    warm = run | {"total": args.warmup}
    print(f"serve up; phase batch1: {args.requests} requests, {args.concurrency} clients", file=sys.stderr)
    run_load(url, **warm)
    rss_before = _replica_rss()
    results["batch1"] = run_load(url, **run)
    print(f"batch1: {results['batch1']}", file=sys.stderr)

    start(settings(max_batch_size=args.batch, batch_wait_timeout_s=args.wait_ms / 1000))
    run_load(url, **warm)
    seen = len(handle.seen_batch_sizes.remote().result())
    results["batched"] = run_load(url, **run)
    print(f"batched: {results['batched']}", file=sys.stderr)
    sizes = handle.seen_batch_sizes.remote().result()[seen:]
    rss_after = _replica_rss()

    small = args.shed_queue
    start(settings(max_batch_size=args.batch, max_ongoing_requests=small, max_queued_requests=small))
    shed = run_load(url, bodies, args.burst, args.burst, args.max_seconds)
    print(f"burst: {shed}", file=sys.stderr)
    serve.shutdown()
    ray.shutdown()

    plain_port = _free_port()
    cmd = [sys.executable, __file__, "--config", args.config, "--route", args.route, "--plain-server", str(plain_port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        _wait_http(f"http://127.0.0.1:{plain_port}/healthz", 300)
        plain_url = f"http://127.0.0.1:{plain_port}/v1/{args.route}"
        run_load(plain_url, **warm)
        results["plain"] = run_load(plain_url, **run)
        print(f"plain: {results['plain']}", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(30)

    b1, bb, plain = results["batch1"], results["batched"], results["plain"]
    figures = {
        "rps_batch1": b1["rps"],
        "rps_batched": bb["rps"],
        "p99_batch1_ms": b1["p99"],
        "p99_batched_ms": bb["p99"],
        "rps_plain_server": plain["rps"],
        "p99_plain_ms": plain["p99"],
        "shed_503": shed["status_503"],
        "replica_mem_growth": round(rss_after / rss_before, 3),
        "batched_over_batch1": round(bb["rps"] / b1["rps"], 3),
        "p99_batched_over_batch1": round(bb["p99"] / b1["p99"], 3),
        "batched_over_plain": round(bb["rps"] / plain["rps"], 3),
        "p50_batch1_ms": b1["p50"],
        "p50_batched_ms": bb["p50"],
        "p50_plain_ms": plain["p50"],
        "mean_batch_size": round(float(np.mean(sizes)), 2) if sizes else None,
        "shed_ok": shed["ok"],
        "shed_p99_ms": shed["p99"],
        "shed_retry_after": shed["retry_after_on_all_503"],
        "errors": b1["other_errors"] + bb["other_errors"] + plain["other_errors"] + shed["other_errors"],
        "replica_rss_mb_before": round(rss_before / 2**20, 1),
        "replica_rss_mb_after": round(rss_after / 2**20, 1),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "batch": args.batch,
        "cores": args.cores,
        "route": args.route,
        **costs,
    }
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
