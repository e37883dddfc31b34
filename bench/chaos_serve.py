"""The Serve scenario of the chaos benchmark: a load at about twice capacity with one model replica killed.

`mediascore serve` runs as a user starts it (a subprocess with its own local Ray), with the demo checkpoints and
two replicas of the CAM localizer. Our own client drives ``/v1/localize`` on 127.0.0.1:

1. capacity: a closed loop of concurrent clients for a while gives the throughput ``rps_before``;
2. overload: an open loop at twice that rate for ``seconds``; half-way one replica process is killed;
3. recovery: once Serve has the replica back, the same closed loop gives ``rps_after``.

Figures: ``status_counts`` of the overload's answers (only 200 and 503 with Retry-After are good), ``bad_5xx``
(other 5xx, and 503s without Retry-After), ``lost`` (requests with no HTTP answer: connection errors and requests
still open past the proxy's timeout plus 10 s), ``p99_ms`` of the 200s, ``mem_ratio`` (resident memory of the model
replicas and the gateway after against before), ``recovered_rps_ratio`` (``rps_after / rps_before``), ``seconds``.
"""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import requests
import yaml
from chaos import _ray_workers

from jobs.common.s3server import _free_port

REQUEST_TIMEOUT_S = 30.0
REPLICA = "ServeReplica:mediascore:LocalizeModel"


def _config(home: Path, port: int) -> Path:
    from jobs.common.config import REPO_ROOT

    settings = yaml.safe_load((REPO_ROOT / "configs" / "serve.yaml").read_text())
    settings |= {"port": port, "request_timeout_s": REQUEST_TIMEOUT_S, "api_keys": []}
    replicas = {"min_replicas": 2, "max_replicas": 2, "max_ongoing_requests": 8, "max_queued_requests": 16}
    settings["localize_deployment"] = replicas | {"num_cpus": 0.3, "max_batch_size": 8, "retry_after_s": 1}
    path = home / "serve_chaos.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def _body() -> bytes:
    from PIL import Image

    ramp = np.linspace(0, 255, 128, dtype=np.uint8)
    image = np.stack([np.tile(ramp, (128, 1)), np.tile(ramp[:, None], (1, 128)), np.full((128, 128), 90, np.uint8)], -1)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _rss(root: int) -> int:
    total = 0
    for proc in _ray_workers(root, REPLICA) + _ray_workers(root, "ServeReplica:mediascore:Gateway"):
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


class Client:
    """Requests to ``/v1/localize``, each recorded as (start, status or None, latency, Retry-After present)."""

    def __init__(self, url: str, body: bytes):
        self.url, self.body = f"{url}/v1/localize?mask=none", body
        self.records: list[tuple[float, int | None, float, bool]] = []
        self.lock = threading.Lock()

    def one(self) -> None:
        start = time.monotonic()
        try:
            r = requests.post(self.url, data=self.body, timeout=REQUEST_TIMEOUT_S + 10)
            record = (start, r.status_code, time.monotonic() - start, bool(r.headers.get("Retry-After")))
        except requests.RequestException:
            record = (start, None, time.monotonic() - start, False)
        with self.lock:
            self.records.append(record)

    def closed_loop(self, clients: int, seconds: float) -> float:
        """Throughput (200s per second) of ``clients`` clients that each send the next request on an answer."""
        deadline, before = time.monotonic() + seconds, len(self.records)

        def loop():
            while time.monotonic() < deadline:
                self.one()

        threads = [threading.Thread(target=loop) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(1 for r in self.records[before:] if r[1] == 200) / seconds

    def open_loop(self, rate: float, seconds: float, at_half) -> list:
        """``rate`` requests per second for ``seconds``, whatever the answers; ``at_half()`` runs half-way."""
        before, start = len(self.records), time.monotonic()
        with ThreadPoolExecutor(max_workers=256) as pool:
            sent, fired = 0, False
            while (now := time.monotonic()) < start + seconds:
                if not fired and now >= start + seconds / 2:
                    fired = True
                    threading.Thread(target=at_half, daemon=True).start()
                while sent < (now - start) * rate:
                    pool.submit(self.one)
                    sent += 1
                time.sleep(0.005)
        return self.records[before:]


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"mediascore serve exited with {proc.returncode}")
        try:
            if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1.0)
    raise SystemExit("mediascore serve was not ready in time")


def _wait_replicas(root: int, count: int, url: str, timeout_s: float = 300) -> float:
    """Seconds until ``count`` localizer replicas run again and answer."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if len(_ray_workers(root, REPLICA)) >= count:
            states = requests.get(f"{url}/v1/models", timeout=30).json()["models"]
            if states["localize"].get("loaded"):
                return time.monotonic() - start
        time.sleep(1.0)
    return float("nan")


def run_serve_overload(home: Path, seconds: float) -> dict:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "jobs.cli", "serve", "--config", str(_config(home, port)), "--num-cpus", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    started = time.monotonic()
    try:
        _wait_ready(url, proc)
        _wait_replicas(proc.pid, 2, url)
        client = Client(url, _body())
        window = min(20.0, max(5.0, seconds / 6))
        client.closed_loop(4, 3.0)  # warm-up
        rps_before = client.closed_loop(8, window)
        memory_before = _rss(proc.pid)
        injected = []

        def kill_one():
            replicas = _ray_workers(proc.pid, REPLICA)
            if replicas:
                replicas[0].send_signal(signal.SIGKILL)
                injected.append(f"killed replica pid {replicas[0].pid} at {time.monotonic() - started:.1f} s")

        overload = client.open_loop(2 * rps_before, seconds, kill_one)
        back_s = _wait_replicas(proc.pid, 2, url)
        rps_after = client.closed_loop(8, window)
        memory_after = _rss(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    statuses = Counter("none" if status is None else str(status) for _, status, _, _ in overload)
    bad = sum(1 for _, status, _, retry in overload if status and status >= 500 and not (status == 503 and retry))
    latencies = sorted(latency for _, status, latency, _ in overload if status == 200)
    return {
        "status_counts": dict(sorted(statuses.items())),
        "bad_5xx": bad,
        "lost": statuses.get("none", 0),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1) if latencies else None,
        "mem_ratio": round(memory_after / memory_before, 3) if memory_before else None,
        "rps_before": round(rps_before, 1),
        "rps_offered": round(2 * rps_before, 1),
        "rps_after": round(rps_after, 1),
        "recovered_rps_ratio": round(rps_after / rps_before, 3) if rps_before else None,
        "replica_back_s": round(back_s, 1),
        "seconds": round(time.monotonic() - started, 1),
        "injected": injected,
    }
