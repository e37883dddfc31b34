"""The Serve application on the real local Ray: routes, batching, limits, keys and shedding."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw

from serve.app import build_app
from serve.config import ServeSettings

KEY = "test-key"


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _text_image() -> np.ndarray:
    from jobs.corpus.fonts import font

    img = Image.new("RGB", (360, 120), "white")
    ImageDraw.Draw(img).text((20, 30), "HELLO WORLD", fill="black", font=font("en", 44))
    return np.asarray(img)


@pytest.fixture(scope="module")
def server(ray_local):
    import socket

    from ray import serve

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]

    small = {"num_cpus": 0.4, "max_ongoing_requests": 2, "max_queued_requests": 2, "max_batch_size": 4,
             "batch_wait_timeout_s": 0.05}  # fmt: skip
    settings = ServeSettings.model_validate(
        {
            "ocr": {"det_limit_side": 320, "presence_side": 0},
            "api_keys": [KEY],
            "max_body_bytes": 2_000_000,
            "max_pixels": 1_000_000,
            "ocr_deployment": small | {"max_ongoing_requests": 8, "max_queued_requests": 32},
            "restore_deployment": small,
            "gateway": {"num_cpus": 0.1, "max_ongoing_requests": 64, "max_queued_requests": 128},
        }
    )
    serve.start(http_options={"host": "127.0.0.1", "port": free_port})
    serve.run(build_app(settings), name="mediascore", route_prefix="/")
    yield f"http://127.0.0.1:{free_port}"
    serve.shutdown()


def _post(url: str, body: bytes, key: str | None = KEY) -> requests.Response:
    return requests.post(url, data=body, headers={"X-API-Key": key} if key else {}, timeout=120)


def test_health_and_readiness(server):
    assert requests.get(f"{server}/healthz", timeout=30).json()["status"] == "ok"
    ready = requests.get(f"{server}/readyz", timeout=60).json()
    assert ready["status"] == "ready" and "restore_tiny.pt" in ready["restore_model"]


def test_ocr_reads_text_and_batches_concurrent_requests(server):
    from ray import serve

    body = _png(_text_image())
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _post(f"{server}/v1/ocr", body), range(8)))
    assert [r.status_code for r in results] == [200] * 8, [r.text[:300] for r in results]
    lines = " ".join(results[0].json()["lines"]).upper()
    assert "HELLO" in lines and len(results[0].json()["boxes"]) == len(results[0].json()["lines"])
    sizes = serve.get_deployment_handle("OcrModel", "mediascore").seen_batch_sizes.remote().result()
    assert max(sizes) > 1  # the model saw batches, not one request at a time


def test_restore_returns_a_png_of_the_same_size(server):
    image = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    response = _post(f"{server}/v1/restore", _png(image))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    out = np.asarray(Image.open(io.BytesIO(response.content)))
    assert out.shape == image.shape
    assert 0 <= float(response.headers["X-Quality-After"]) <= 100


def test_bad_input_gets_a_clear_4xx(server):
    assert _post(f"{server}/v1/ocr", b"not an image").status_code == 415
    assert _post(f"{server}/v1/ocr", b"\0" * 2_100_000).status_code == 413
    big = _post(f"{server}/v1/ocr", _png(np.zeros((1100, 1000, 3), np.uint8)))
    assert big.status_code == 413 and "pixels" in big.json()["detail"]
    assert requests.get(f"{server}/healthz", timeout=30).status_code == 200  # nothing crashed


def test_a_key_is_required_when_keys_are_set(server):
    body = _png(_text_image())
    assert _post(f"{server}/v1/ocr", body, key=None).status_code == 401
    assert _post(f"{server}/v1/ocr", body, key="wrong").status_code == 401


def test_overload_is_shed_with_503_and_retry_after(server):
    image = (np.random.default_rng(1).random((480, 640, 3)) * 255).astype(np.uint8)
    body = _png(image)
    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(lambda _: _post(f"{server}/v1/restore", body), range(24)))
    codes = [r.status_code for r in results]
    assert set(codes) <= {200, 503} and 503 in codes and 200 in codes
    assert all(r.headers.get("Retry-After") for r in results if r.status_code == 503)
