"""`mediascore serve` and `serve run` on a Serve config file, each as a user starts them: a separate process with
its own local Ray. Slow (a minute each): `make test-slow`."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 400) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert proc.poll() is None, "the server exited early"
        try:
            if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(2)
    raise TimeoutError(url)


def _ocr_answers(url: str) -> None:
    image = np.full((80, 200, 3), 255, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    response = requests.post(f"{url}/v1/ocr", data=buf.getvalue(), timeout=120)
    assert response.status_code == 200 and response.json()["lines"] == []


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_mediascore_serve_starts_answers_and_stops_on_ctrl_c(tmp_path):
    port = _port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [str(BIN / "mediascore"), "serve", "--port", str(port), "--num-cpus", "2"]
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "out.txt", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(url, proc)
            _ocr_answers(url)
        finally:
            code = _stop(proc)
    assert code == 0 and f"serving on {url}" in (tmp_path / "out.txt").read_text()


def test_serve_run_on_the_written_serve_config_file(tmp_path):
    port = _port()
    config = tmp_path / "serve_app.yaml"
    written = subprocess.run(
        [str(BIN / "mediascore"), "serve", "--port", str(port), "--write-serve-config", str(config)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    root = Path(__file__).resolve().parents[2]
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "out.txt", "w") as log:
        proc = subprocess.Popen(
            [str(BIN / "serve"), "run", "--address", "local", str(config)],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(url, proc)
            _ocr_answers(url)
            models = requests.get(f"{url}/v1/models", timeout=60).json()["models"]
            assert models["score"]["models"]["fusion"]["uri"].endswith("checkpoints/fusion_lite0.pt")
        finally:
            _stop(proc)
