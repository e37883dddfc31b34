"""The Ray Serve application: a FastAPI ingress over model deployments that reuse the batch jobs' code.

* ``OcrModel`` runs the ``ocr`` stage (the same class ``mediascore score`` runs) over batches of requests.
* ``RestoreModel`` runs the generator and quality classifier of ``mediascore restore`` over batches.
* ``Gateway`` checks keys and limits, decodes the body with the batch decoder and calls the models.

Each model method is a ``@serve.batch`` handler: concurrent requests reach the model as one list. Beyond
``max_queued_requests`` Serve's proxy answers 503 with a Retry-After header (``BackpressureConfig``).
"""

import io
import os
import time

import numpy as np
from fastapi import FastAPI, HTTPException, Request, Response
from PIL import Image
from ray import serve
from ray.serve.config import BackpressureConfig

from serve.config import DeploymentSettings, ServeSettings

api = FastAPI(title="mediascore", version="1")


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
        },
    }


def _rows(images: list[np.ndarray]) -> dict:
    n = len(images)
    return {
        "source_uri": np.array([f"request:{i}" for i in range(n)]),
        "pixels": images,
        "error": np.array([None] * n, dtype=object),
        "error_code": np.array([None] * n, dtype=object),
    }


def _ocr_result(out: dict, i: int) -> dict:
    boxes = [[int(v) for v in box] for box in (out["ocr_boxes"][i] or [])]
    lines, scores = list(out["ocr_lines"][i] or []), [float(s) for s in (out["ocr_scores"][i] or [])]
    return {"lines": lines, "boxes": boxes, "scores": scores, "error": out["error"][i]}


class OcrModel:
    """Text lines, quadrilaterals and confidences from the ``ocr`` stage."""

    def __init__(self, settings: dict):
        from jobs.stages.ocr import OcrStage

        cfg = ServeSettings.model_validate(settings)
        self.stage = OcrStage(cfg.ocr)
        self.batch_sizes: list[int] = []
        self.predict.set_max_batch_size(cfg.ocr_deployment.max_batch_size)
        self.predict.set_batch_wait_timeout_s(cfg.ocr_deployment.batch_wait_timeout_s)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def predict(self, images: list[np.ndarray]) -> list[dict]:
        self.batch_sizes.append(len(images))
        out = self.stage(_rows(images))
        return [_ocr_result(out, i) for i in range(len(images))]

    def seen_batch_sizes(self) -> list[int]:
        return list(self.batch_sizes)


class RestoreModel:
    """The restoration generator, with the quality classifier's number before and after."""

    def __init__(self, settings: dict):
        from jobs.quality_classifier import QualityJudge
        from jobs.restore_infer import Restorer

        cfg = ServeSettings.model_validate(settings)
        self.restorer = Restorer(cfg.restore_checkpoint)
        self.judge = QualityJudge(cfg.quality_checkpoint)
        self.predict.set_max_batch_size(cfg.restore_deployment.max_batch_size)
        self.predict.set_batch_wait_timeout_s(cfg.restore_deployment.batch_wait_timeout_s)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)
    async def predict(self, images: list[np.ndarray]) -> list[dict]:
        restored = [self.restorer(im) for im in images]
        before, _ = self.judge.judge(images)
        after, _ = self.judge.judge(restored)
        return [
            {"image": r, "quality_before": b, "quality_after": a}
            for r, b, a in zip(restored, before, after, strict=True)
        ]

    def version(self) -> str:
        return self.restorer.version


@serve.ingress(api)
class Gateway:
    """HTTP ingress: keys, limits, decoding, and the routes."""

    def __init__(self, settings: dict, ocr, restore):
        self.cfg = ServeSettings.model_validate(settings)
        extra = [k for k in os.environ.get(self.cfg.api_keys_env, "").split(",") if k]
        self.keys = set(self.cfg.api_keys) | set(extra)
        self.ocr, self.restore = ocr, restore
        self.started = time.time()

    def _check_key(self, request: Request) -> None:
        if self.keys and request.headers.get("x-api-key") not in self.keys:
            raise HTTPException(401, detail="missing or invalid X-API-Key")

    async def _image(self, request: Request) -> np.ndarray:
        from jobs.decode import DecodeError, decode_image

        self._check_key(request)
        declared = int(request.headers.get("content-length") or 0)
        if declared > self.cfg.max_body_bytes:
            raise HTTPException(413, detail=f"body of {declared} bytes > limit {self.cfg.max_body_bytes}")
        body = await request.body()
        if len(body) > self.cfg.max_body_bytes:
            raise HTTPException(413, detail=f"body of {len(body)} bytes > limit {self.cfg.max_body_bytes}")
        try:
            return decode_image(body, self.cfg.max_pixels)[0]
        except DecodeError as exc:
            status = 413 if exc.code == "image_too_large" else 415
            raise HTTPException(status, detail=str(exc)) from None

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "uptime_s": round(time.time() - self.started, 1)}

    @api.get("/readyz")
    async def readyz(self) -> dict:
        return {"status": "ready", "restore_model": await self.restore.version.remote()}

    async def _call(self, handle, image: np.ndarray, retry_after_s: float):
        """A model call; a full model queue becomes 503 with Retry-After instead of an error."""
        from ray.serve.exceptions import BackPressureError

        try:
            return await handle.predict.remote(image)
        except BackPressureError:
            retry = str(max(1, round(retry_after_s)))
            raise HTTPException(503, detail="over capacity, retry later", headers={"Retry-After": retry}) from None

    @api.post("/v1/ocr")
    async def ocr_route(self, request: Request) -> dict:
        image = await self._image(request)
        return await self._call(self.ocr, image, self.cfg.ocr_deployment.retry_after_s)

    @api.post("/v1/restore")
    async def restore_route(self, request: Request) -> Response:
        image = await self._image(request)
        result = await self._call(self.restore, image, self.cfg.restore_deployment.retry_after_s)
        buf = io.BytesIO()
        Image.fromarray(result["image"]).save(buf, format="PNG")
        headers = {
            "X-Quality-Before": f"{result['quality_before']:.2f}",
            "X-Quality-After": f"{result['quality_after']:.2f}",
        }
        return Response(buf.getvalue(), media_type="image/png", headers=headers)


def build_app(settings: ServeSettings):
    """The application: model deployments bound into the gateway, every option from ``settings``."""
    plain = settings.model_dump(mode="json")
    ocr = serve.deployment(OcrModel, **_options(settings.ocr_deployment)).bind(plain)
    restore = serve.deployment(RestoreModel, **_options(settings.restore_deployment)).bind(plain)
    return serve.deployment(Gateway, **_options(settings.gateway)).bind(plain, ocr, restore)
