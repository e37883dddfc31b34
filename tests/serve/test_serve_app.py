"""The Serve application on the real local Ray, with the demo checkpoints in the real S3 server: every route,
batching, limits, keys, shedding, and a checkpoint rolled out under load."""

from __future__ import annotations

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from serve.app import _error_status, _short_reason
from serve.config import ServeSettings

KEY = "test-key"
ROOT = Path(__file__).resolve().parents[2]


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _text_image() -> np.ndarray:
    from jobs.corpus.fonts import font

    img = Image.new("RGB", (360, 160), "white")
    ImageDraw.Draw(img).text((20, 30), "HELLO WORLD", fill="black", font=font("en", 44))
    return np.asarray(img)


def _truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_text_image()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def _settings_dict(models: dict) -> dict:
    small = {"num_cpus": 0.2, "max_ongoing_requests": 2, "max_queued_requests": 2, "max_batch_size": 4,
             "batch_wait_timeout_s": 0.05}  # fmt: skip
    wide = small | {"max_ongoing_requests": 16, "max_queued_requests": 32}
    return {
        "models": models,
        "api_keys": [KEY],
        "max_body_bytes": 2_000_000,
        "max_pixels": 1_000_000,
        "uri_prefixes": ["s3://media/"],
        "score_deployment": wide | {"num_cpus": 0.4},
        "localize_deployment": wide,
        "ocr_deployment": wide,
        "restore_deployment": small,
        "scorefusion_deployment": wide,
        "gateway": {"num_cpus": 0.1, "max_ongoing_requests": 64, "max_queued_requests": 128},
    }


@pytest.fixture(scope="module")
def checkpoints(s3, scorefusion_run):
    """The demo checkpoints copied into the object store: section -> URI; and the multi-modal model of the
    scorefusion training test."""
    from jobs.common import storage

    storage.ensure_bucket("s3://models/")
    uris = {}
    for name in ("cam_lite0", "fusion_lite0", "restore_tiny", "quality_tiny"):
        uris[name] = f"s3://models/serve/{name}.pt"
        storage.write_bytes(uris[name], (ROOT / "checkpoints" / f"{name}.pt").read_bytes())
    uris["scorefusion"] = "s3://models/serve/scorefusion.pt"
    storage.write_bytes(uris["scorefusion"], storage.read_bytes(scorefusion_run[0].output + "/scorefusion.pt"))
    storage.ensure_bucket("s3://media/")
    return uris


def _models(uris: dict, cam: str | None = None) -> dict:
    return {
        "cam": {"checkpoint": cam or uris["cam_lite0"]},
        "ocr": {"det_limit_side": 320, "presence_side": 0},
        "objects": {"max_side": 640},
        "fusion": {"checkpoint": uris["fusion_lite0"]},
        "restore": {"checkpoint": uris["restore_tiny"], "quality_checkpoint": uris["quality_tiny"]},
        "scorefusion": {"checkpoint": uris["scorefusion"]},
    }


@pytest.fixture(scope="module")
def key_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "api_keys"
    path.write_text("# rotated keys, one per line\n")
    return path


@pytest.fixture(scope="module")
def settings_of(free_port_module, key_file):
    """The test server's settings with these models: the same for every deployment, so only the models change."""
    return lambda models: _settings_dict(models) | {"port": free_port_module, "api_keys_file": str(key_file)}


@pytest.fixture(scope="module")
def server(ray_local, checkpoints, settings_of):
    from ray import serve

    from serve.app import start

    settings = ServeSettings.model_validate(settings_of(_models(checkpoints)))
    url = start(settings, timeout_s=300)
    yield url
    serve.shutdown()


@pytest.fixture(scope="module")
def free_port_module():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: bytes | None = None, key: str | None = KEY, **kwargs) -> requests.Response:
    headers = {"X-API-Key": key} if key else {}
    return requests.post(url, data=body, headers=headers, timeout=120, **kwargs)


def _batch_sizes(deployment: str) -> list[int]:
    from ray import serve

    return serve.get_deployment_handle(deployment, "mediascore").seen_batch_sizes.remote().result()


def test_ready_and_models_name_the_object_store_checkpoints(server, checkpoints):
    assert requests.get(f"{server}/healthz", timeout=30).json()["status"] == "ok"
    ready = requests.get(f"{server}/readyz", timeout=60)
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "waiting_on": []}
    models = requests.get(f"{server}/v1/models", timeout=60).json()["models"]
    assert set(models) == {"score", "localize", "ocr", "restore", "scorefusion"} and all(
        m["loaded"] for m in models.values()
    )
    fusion = models["score"]["models"]["fusion"]
    assert fusion["uri"] == checkpoints["fusion_lite0"]
    assert fusion["version"] == f"{fusion['uri']}#epoch={fusion['epoch']}"
    assert "val_auroc" in fusion["metrics"]
    assert models["restore"]["models"]["restore"]["uri"] == checkpoints["restore_tiny"]
    assert models["localize"]["models"]["cam"]["uri"] == checkpoints["cam_lite0"]


def test_score_matches_the_batch_stages_and_reads_uris(server, checkpoints):
    from jobs.common import storage
    from jobs.common.config import CamConfig, FusionStageConfig, ObjectsConfig, OcrConfig, TextEmbedConfig
    from jobs.score.stages import ChainedStages
    from jobs.score.stages.cam import CamStage
    from jobs.score.stages.fusion import FusionStage
    from jobs.score.stages.objects import ObjectsStage
    from jobs.score.stages.ocr import OcrStage
    from jobs.score.stages.text_embed import TextEmbedStage
    from serve.models import batch_from_images

    image = _text_image()
    response = _post(f"{server}/v1/score", _png(image))
    assert response.status_code == 200, response.text
    got = response.json()
    assert "HELLO" in got["text"].upper() and 0 <= got["score"] <= 1
    assert got["class"] in ("risky", "safe") and set(got["weights"]) <= {"text", "style", "object", "key"}
    x0, y0, x1, y1 = got["cam_box"]
    assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
    assert got["models"]["fusion"].startswith(checkpoints["fusion_lite0"])

    # the batch job's own stages, built here from the same sections, give the same answer
    models = _models(checkpoints)
    chain = ChainedStages(
        [
            OcrStage(OcrConfig(**models["ocr"])),
            TextEmbedStage(TextEmbedConfig()),
            ObjectsStage(ObjectsConfig(**models["objects"])),
            FusionStage(FusionStageConfig(**models["fusion"])),
            CamStage(CamConfig(**models["cam"])),
        ]
    )
    local = chain(batch_from_images([image]))
    assert got["score"] == pytest.approx(float(local["fusion_score"][0]), abs=1e-5)
    assert got["cam_box"] == [int(v) for v in local["cam_box"][0]] and got["text"] == local["ocr_text"][0]

    storage.write_bytes("s3://media/frames/hello.png", _png(image))
    by_uri = _post(f"{server}/v1/score", json={"uri": "s3://media/frames/hello.png"})
    assert by_uri.status_code == 200 and by_uri.json()["score"] == pytest.approx(got["score"], abs=1e-6)


def test_scorefusion_answers_as_score_samples_from_files_or_uris(server, scorefusion_run):
    from jobs.common import storage
    from jobs.media.scorefusion import ScoreFusionScorer

    settings, _, manifest, *_ = scorefusion_run
    sample = manifest[manifest.split == "test"].groupby("sample_id").uri.apply(list).iloc[0]
    files = {uri.rsplit("/", 1)[-1].split(".")[0]: (uri.rsplit("/", 1)[-1], storage.read_bytes(uri)) for uri in sample}
    url = f"{server}/v1/scorefusion"
    got = _post(url, files={m: (name, data) for m, (name, data) in files.items()})
    assert got.status_code == 200, got.text
    want = ScoreFusionScorer(settings.output + "/scorefusion.pt").score_samples(
        [{m: (data, name) for m, (name, data) in files.items()}]
    )[0]
    answer = got.json()
    assert answer["sf_score"] == pytest.approx(want.sf_score, abs=1e-5) and answer["sf_class"] == want.sf_class
    assert set(answer["sf_scores"]) == {"infrared", "clip"} and answer["sf_missing"] == []
    assert answer["sf_model"].startswith("s3://models/serve/scorefusion.pt#epoch=")
    for name, data in files.values():
        storage.write_bytes(f"s3://media/sf/{name}", data)
    by_uri = _post(url, json={"uris": {m: f"s3://media/sf/{name}" for m, (name, _) in files.items()}})
    assert by_uri.status_code == 200 and by_uri.json()["sf_score"] == pytest.approx(answer["sf_score"], abs=1e-6)
    alone = _post(url, files={"infrared": files["infrared"]}).json()
    assert alone["sf_missing"] == ["clip"] and alone["sf_weights"] == {"infrared": 1.0}
    broken = _post(url, files={"infrared": files["infrared"], "clip": ("clip.mp4", b"not a video")}).json()
    assert broken["sf_missing"][0].startswith("clip (") and broken["sf_score"] == pytest.approx(alone["sf_score"])


@pytest.mark.parametrize(
    ("kwargs", "status", "says"),
    [
        ({"files": {"thermal": ("t.png", b"x")}}, 422, "unknown modalities"),
        ({"data": b"infrared=1", "headers": {"Content-Type": "multipart/form-data; boundary=zz"}}, 400, "multipart"),
        ({"data": b"raw", "headers": {"Content-Type": "image/png"}}, 415, "multipart/form-data"),
        ({"json": {"uri": "s3://media/x.png"}}, 400, "uris"),
        ({"json": {"uris": {}}}, 400, "no modalities"),
        ({"json": {"uris": {"infrared": "s3://models/serve/scorefusion.pt"}}}, 403, "readable prefix"),
        ({"json": {"uris": {"infrared": "s3://media/sf/none.png"}}}, 404, "no object"),
    ],
)
def test_scorefusion_refuses_bad_samples_with_the_reason(server, kwargs, status, says):
    got = requests.post(f"{server}/v1/scorefusion", headers={"X-API-Key": KEY} | kwargs.pop("headers", {}),
                        timeout=120, **kwargs)  # fmt: skip
    assert got.status_code == status and says in got.json()["detail"], got.text


def test_any_legal_key_is_read_by_uri(server, put_tricky_images):
    """Keys with spaces, ``# + % ? & = ; @ : , ' "``, ``%20``, unicode and deep prefixes, each read as itself:
    the mask of ``/v1/localize`` has the size of the image behind its own key."""
    sizes = put_tricky_images("s3://media/tricky")

    def localize(uri: str) -> requests.Response:
        return _post(f"{server}/v1/localize", json={"uri": uri}, params={"mask": "rle"})

    with ThreadPoolExecutor(4) as pool:
        answers = dict(zip(sizes, pool.map(localize, sizes), strict=True))
    for uri, answer in answers.items():
        assert answer.status_code == 200, (uri, answer.text[:300])
        height, width = answer.json()["mask"]["size"]
        assert (width, height) == sizes[uri], uri
    named = "s3://media/tricky/img/with space #1 + 50%.png"  # the key the issue names, on the score route too
    assert _post(f"{server}/v1/score", json={"uri": named}).status_code == 200


def test_score_batches_concurrent_requests(server):
    body = _png(_text_image())
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _post(f"{server}/v1/score", body), range(8)))
    assert [r.status_code for r in results] == [200] * 8, [r.text[:300] for r in results]
    assert len({round(r.json()["score"], 5) for r in results}) == 1  # batching does not change answers
    assert max(_batch_sizes("ScoreModel")) > 1


def test_localize_returns_box_and_mask_in_both_encodings(server):
    from jobs.media.masks import png_to_mask, rle_to_mask

    image = _text_image()
    rle = _post(f"{server}/v1/localize", _png(image), params={"mask": "rle"})
    png = _post(f"{server}/v1/localize", _png(image), params={"mask": "png"})
    none = _post(f"{server}/v1/localize", _png(image), params={"mask": "none"})
    assert rle.status_code == png.status_code == none.status_code == 200, rle.text
    a, b = rle_to_mask(rle.json()["mask"]), png_to_mask(png.json()["mask"])
    assert a.shape == image.shape[:2] and np.array_equal(a, b)
    assert rle.json()["mask_area"] == pytest.approx(a.mean())
    assert none.json()["mask"] is None and none.json()["box"] == rle.json()["box"]
    x0, y0, x1, y1 = rle.json()["box"]
    assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
    assert rle.json()["class"] == png.json()["class"]


def test_ocr_reads_text_and_batches_concurrent_requests(server):
    body = _png(_text_image())
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _post(f"{server}/v1/ocr", body), range(8)))
    assert [r.status_code for r in results] == [200] * 8, [r.text[:300] for r in results]
    got = results[0].json()
    assert "HELLO" in " ".join(got["lines"]).upper()
    assert len(got["boxes"]) == len(got["lines"]) == len(got["confidences"]) and all(len(b) == 8 for b in got["boxes"])
    assert max(_batch_sizes("OcrModel")) > 1  # the model saw batches, not one request at a time


def test_restore_returns_a_png_of_the_same_size(server):
    image = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    response = _post(f"{server}/v1/restore", _png(image))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    out = np.asarray(Image.open(io.BytesIO(response.content)))
    assert out.shape == image.shape
    for header in ("X-Quality-Before", "X-Quality-After"):
        assert 0 <= float(response.headers[header]) <= 100


def test_bad_input_gets_a_clear_4xx_and_the_service_goes_on(server):
    url = f"{server}/v1/score"
    cases = {
        "undecodable": (_post(url, b"not an image"), 415),
        "body too large": (_post(url, b"\0" * 2_100_000), 413),
        "chunked body too large": (_post(url, iter([b"\0" * 500_000] * 5)), 413),  # no Content-Length
        "too many pixels": (_post(url, _png(np.zeros((1100, 1000, 3), np.uint8))), 413),
        "empty": (_post(url, b""), 400),
        "truncated (the header passes, the model's decode does not)": (_post(url, _truncated_jpeg()), 415),
    }
    json_headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
    cases["malformed json"] = (requests.post(url, data=b"{uri:", headers=json_headers, timeout=60), 400)
    cases["json without uri"] = (_post(url, json={"path": "x"}), 400)
    cases["uri outside the prefixes"] = (_post(url, json={"uri": "file:///etc/passwd"}), 403)
    cases["local path"] = (_post(url, json={"uri": "/etc/passwd"}), 403)
    cases["dot segments"] = (_post(url, json={"uri": "s3://media/a/../../models/serve/cam_lite0.pt"}), 403)
    cases["another bucket sharing the prefix's name"] = (_post(url, json={"uri": "s3://media-private/x.png"}), 403)
    cases["missing object"] = (_post(url, json={"uri": "s3://media/nope.png"}), 404)
    cases["invalid bucket name"] = (_post(url, json={"uri": "s3://../../etc/passwd"}), 400)
    cases["a bucket, not an object"] = (_post(url, json={"uri": "s3://media/"}), 400)
    cases["unknown mask format"] = (_post(f"{server}/v1/localize", _png(_text_image()), params={"mask": "x"}), 422)
    for what, (response, status) in cases.items():
        assert response.status_code == status, (what, response.status_code, response.text[:200])
        assert response.headers["content-type"].startswith("application/json") and response.json()["detail"], what
    assert "pixels" in cases["too many pixels"][0].json()["detail"]
    assert cases["invalid bucket name"][0].json()["detail"] == (
        "invalid URI 's3://../../etc/passwd': bucket name '..' must be 3 to 63 characters long"
    )
    assert "names a bucket, not an object" in cases["a bucket, not an object"][0].json()["detail"]
    assert _post(url, _png(_text_image())).status_code == 200  # nothing crashed


def test_a_key_is_required_when_keys_are_set(server):
    body = _png(_text_image())
    for route in ("score", "localize", "ocr", "restore"):
        assert _post(f"{server}/v1/{route}", body, key=None).status_code == 401
        assert _post(f"{server}/v1/{route}", body, key="wrong").status_code == 401
        assert _post(f"{server}/v1/{route}", body, key=KEY[:-1]).status_code == 401  # a prefix of a key is not it


def _status_within(url: str, body: bytes, key: str, status: int, timeout_s: float = 15.0) -> int:
    deadline = time.time() + timeout_s
    while (code := _post(url, body, key=key).status_code) != status and time.time() < deadline:
        time.sleep(0.5)
    return code


def test_keys_in_the_key_file_are_reloaded_without_a_restart(server, key_file):
    url, body = f"{server}/v1/ocr", _png(np.full((40, 60, 3), 255, np.uint8))
    assert _post(url, body, key="rotated-1").status_code == 401
    key_file.write_text("rotated-1\n# a comment\n")
    assert _status_within(url, body, "rotated-1", 200) == 200
    key_file.write_text("rotated-2\n")
    assert _status_within(url, body, "rotated-1", 401) == 401
    assert _post(url, body, key="rotated-2").status_code == 200
    assert _post(url, body, key=KEY).status_code == 200  # the config's own keys stay


def _encoded(image: np.ndarray, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **options)
    return buf.getvalue()


def test_tiny_thin_and_odd_sized_images_work_on_every_route(server):
    """A 1x1 lossless WebP once gave a 500 with a traceback on /v1/restore, and a 1x2000 strip made the OCR
    detector ask for 10 GB; every shape is answered."""
    rng = np.random.default_rng(7)
    shapes = {"1x1 webp": ((1, 1), "WEBP", {"lossless": True}), "2x3 png": ((2, 3), "PNG", {}),
              "1x2000 png": ((1, 2000), "PNG", {}), "1500x1 png": ((1500, 1), "PNG", {}),
              "7x13 jpeg": ((7, 13), "JPEG", {}), "17x1021 gif": ((17, 1021), "GIF", {})}  # fmt: skip
    for name, ((h, w), fmt, options) in shapes.items():
        body = _encoded(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), fmt, **options)
        for route in ("score", "localize", "ocr", "restore"):
            response = _post(f"{server}/v1/{route}", body)
            assert response.status_code == 200, (name, route, response.status_code, response.text[:300])
        restored = np.asarray(Image.open(io.BytesIO(response.content)))
        assert restored.shape[:2] == (h, w), name


def test_overload_is_shed_with_503_and_retry_after(server):
    body = _png((np.random.default_rng(1).random((480, 640, 3)) * 255).astype(np.uint8))
    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(lambda _: _post(f"{server}/v1/restore", body), range(24)))
    codes = [r.status_code for r in results]
    assert set(codes) <= {200, 503} and 503 in codes and 200 in codes
    assert all(r.headers.get("Retry-After") for r in results if r.status_code == 503)


def test_openapi_documents_every_route(server):
    spec = requests.get(f"{server}/openapi.json", timeout=30).json()
    assert {"/v1/score", "/v1/localize", "/v1/ocr", "/v1/restore", "/v1/models", "/healthz", "/readyz"} <= set(
        spec["paths"]
    )
    assert "application/json" in spec["paths"]["/v1/score"]["post"]["requestBody"]["content"]


def test_a_new_checkpoint_rolls_out_in_place_without_dropping_requests(server, checkpoints, settings_of):
    from jobs.common import storage
    from serve.app import start

    new_uri = "s3://models/serve/cam_v2.pt"
    storage.write_bytes(new_uri, storage.read_bytes(checkpoints["cam_lite0"]))
    body, answers, stop = _png(_text_image()), [], threading.Event()

    def traffic():
        while not stop.is_set():
            r = _post(f"{server}/v1/localize", body, params={"mask": "none"})
            answers.append((r.status_code, r.json().get("model", "") if r.status_code == 200 else r.text))

    thread = threading.Thread(target=traffic)
    thread.start()
    time.sleep(1.0)
    settings = settings_of(_models(checkpoints, cam=new_uri))
    start(ServeSettings.model_validate(settings), timeout_s=300)
    time.sleep(1.0)
    stop.set()
    thread.join()
    assert answers and all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:3]
    models = [model for _, model in answers]
    assert models[0].startswith(checkpoints["cam_lite0"]) and models[-1].startswith(new_uri)
    state = requests.get(f"{server}/v1/models", timeout=60).json()["models"]
    assert state["localize"]["models"]["cam"]["uri"] == new_uri
    assert state["localize"]["loads"] == 2  # the same replica loaded it: reconfigured, not restarted
    assert state["restore"]["loads"] == 1  # deployments whose models did not change were left alone


def test_a_checkpoint_that_fails_to_load_leaves_the_old_model_serving(server, checkpoints, settings_of):
    from serve.app import start

    current = "s3://models/serve/cam_v2.pt"  # what the rollout test left
    body = _png(_text_image())
    broken = settings_of(_models(checkpoints, cam="s3://models/serve/missing.pt"))
    with pytest.raises(RuntimeError, match="kept their previous models"):
        start(ServeSettings.model_validate(broken), timeout_s=300)
    answer = _post(f"{server}/v1/localize", body, params={"mask": "none"})
    assert answer.status_code == 200 and answer.json()["model"].startswith(current)
    state = requests.get(f"{server}/v1/models", timeout=60).json()["models"]["localize"]
    assert "missing.pt" in state["error"] and state["models"]["cam"]["uri"] == current
    assert requests.get(f"{server}/readyz", timeout=60).status_code == 200

    good = settings_of(_models(checkpoints, cam=current))
    start(ServeSettings.model_validate(good), timeout_s=300)  # back to what runs: the error clears
    assert requests.get(f"{server}/v1/models", timeout=60).json()["models"]["localize"]["error"] is None


@pytest.mark.slow  # a load test: about 45 s on 2 cores
def test_a_deployment_scales_out_under_load(server, checkpoints, settings_of):
    """Last in this module: it leaves the OCR deployment with two replicas."""
    from ray import serve

    from serve.app import start

    settings = settings_of(_models(checkpoints))
    settings["ocr_deployment"] |= {"max_replicas": 2, "target_ongoing_requests": 1, "upscale_delay_s": 0.5}
    start(ServeSettings.model_validate(settings), timeout_s=300)  # an autoscaling change: no restart

    def running() -> int:
        deployment = serve.status().applications["mediascore"].deployments["OcrModel"]
        return deployment.replica_states.get("RUNNING", 0)

    body, stop = _png(_text_image()), threading.Event()

    def traffic():
        while not stop.is_set():
            _post(f"{server}/v1/ocr", body)

    threads = [threading.Thread(target=traffic) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.time() + 120
        while running() < 2 and time.time() < deadline:
            time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert running() == 2


@st.composite
def _image_bodies(draw) -> bytes:
    """Encoded images of any size and shape (tiny, thin, odd, over the pixel limit) in every format we read, or
    random bytes: what a fuzzer sends as ``image/*``."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=512))
    height, width = draw(st.sampled_from([(1, 1), (1, 2000), (2000, 1), (3, 5), (64, 64), (1001, 1000)]))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"]))
    value = draw(st.integers(0, 255))
    return _encoded(np.full((height, width, 3), value, np.uint8), fmt)


@pytest.fixture(scope="module")
def api_schema(server):
    import schemathesis

    schemathesis.openapi.media_type("image/*", _image_bodies())
    return schemathesis.openapi.from_url(f"{server}/openapi.json")


def _fuzz_every_route(schema, examples: int) -> int:
    """schemathesis' generated requests to every operation, with the key: every answer is below 500, or a 503 with
    Retry-After, and no error names our internals. Driven through ``as_strategy`` rather than schemathesis' pytest
    plugin, which does not run under this pytest. Returns how often each (operation, status) was seen."""
    from collections import Counter

    sent: Counter = Counter()

    def check(case) -> None:
        response = case.call(headers={"X-API-Key": KEY}, timeout=120)
        sent[case.operation.label, response.status_code] += 1
        detail = "" if response.status_code == 200 else response.content[:2000].decode("utf-8", "replace")
        assert response.status_code < 500 or (response.status_code == 503 and response.headers.get("Retry-After")), (
            case.operation.label, response.status_code, detail)  # fmt: skip
        assert not any(leak in detail for leak in ("Traceback", "site-packages", 'File "', ".py:")), detail

    config = settings(max_examples=examples, deadline=None, database=None, derandomize=examples < 100,
                      suppress_health_check=list(HealthCheck))  # fmt: skip
    for result in schema.get_all_operations():
        config(given(result.ok().as_strategy())(check))()
    return sent


def _check_fuzzed(sent, examples: int) -> None:
    print(dict(sent))
    assert sum(sent.values()) >= 7 * examples // 2
    for route in ("/v1/score", "/v1/localize", "/v1/ocr", "/v1/restore"):  # images were generated, and answered
        assert sent[f"POST {route}", 200] > 0, route


def test_schemathesis_finds_no_server_error_briefly(api_schema):
    _check_fuzzed(_fuzz_every_route(api_schema, examples=12), 12)


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(api_schema):
    _check_fuzzed(_fuzz_every_route(api_schema, examples=300), 300)


def test_model_failures_are_4xx_with_a_reason_that_names_no_internals():
    assert _error_status("model_error") == 422 and _error_status("stage_error") == 422
    assert _error_status("image_truncated") == 415 and _error_status("image_too_large") == 413
    assert _error_status(None) == 500
    error = "stage_error: ocr: error: OpenCV(4.14.0) /io/opencv/modules/core/src/alloc.cpp:73: error: (-4)"
    assert _short_reason("score", error, "stage_error") == "the ocr model could not process this image"
    assert _short_reason("restore", "RuntimeError on a (1, 1, 3) image", "model_error") == (
        "the restore model could not process this image"
    )


_JSON = st.recursive(st.none() | st.text(max_size=8), lambda c: st.lists(c) | st.dictionaries(st.text(max_size=5), c))
_BODIES = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda v: json.dumps({"uri": v}).encode(), st.text(max_size=60)),
    st.builds(lambda v: json.dumps(v).encode(), _JSON),
)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(_BODIES)
def test_any_json_body_is_a_checked_uri_or_a_400(body):
    from fastapi import HTTPException

    from jobs.common import storage
    from serve.bodies import uri_from_body

    try:
        uri = uri_from_body(body)
    except HTTPException as exc:
        assert exc.status_code == 400 and exc.detail
        return
    assert storage.check_uri(uri, object_key=True) == uri == json.loads(body)["uri"]
