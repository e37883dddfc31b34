"""The Ray Serve application: a FastAPI ingress over the model deployments of ``serve.models``, and how it is
deployed.

``Gateway`` checks keys and limits, reads the body (image bytes, or ``{"uri": ...}`` naming an object), probes the
image header and passes the encoded bytes to the models. Beyond ``max_queued_requests`` Serve's proxy answers 503
with Retry-After (``BackpressureConfig``); a full model queue behind the gateway gets the same answer.

FastAPI reads the routes' annotations at class creation, so this module does not postpone them
(no ``from __future__ import annotations``).
"""

import asyncio
import json
import logging
import os
import re
import time

from fastapi import FastAPI, HTTPException, Request, Response
from ray import serve
from ray.serve.config import BackpressureConfig

from serve.bodies import multipart_files, uri_from_body, uris_from_body
from serve.config import DeploymentSettings, ServeSettings, has_dot_segment, load_serve_settings
from serve.keys import KeyRing
from serve.models import OPTIONAL, Model, deployed
from serve.schemas import (
    IMAGE_BODY,
    SAMPLE_BODY,
    LocalizeResult,
    MaskFormat,
    OcrResult,
    ScoreFusionResult,
    ScoreResult,
)

log = logging.getLogger(__name__)
APP_NAME = "mediascore"
api = FastAPI(
    title="mediascore",
    version="1",
    description="Scoring, localization, OCR and restoration of images. A body is the image's bytes, or JSON "
    '{"uri": "s3://..."} naming an object under the configured prefixes. Errors are JSON {"detail": ...}.',
)


def _options(d: DeploymentSettings) -> dict:
    actor = {"num_cpus": d.num_cpus} | ({"num_gpus": d.num_gpus} if d.num_gpus else {})
    if d.label_selector:
        actor["label_selector"] = dict(d.label_selector)
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


def _decode_status(code: str) -> int:
    return 413 if code == "image_too_large" else 415


def _error_status(code: str | None) -> int:
    """The status of a model's answer for one input: the input's fault (4xx) unless the code says otherwise.

    ``image_*``/``empty_*``: the bytes past the header did not decode (413/415); ``model_error`` and
    ``stage_error``: the model could not process this image (422); ``sample_*``: a multi-modal sample the model
    cannot score (a modality it does not know, or one missing under ``missing: drop``; 422). Anything else is our
    fault (500).
    """
    if code and code.startswith(("image_", "empty_")):
        return _decode_status(code)
    return 422 if code in ("model_error", "stage_error") or (code or "").startswith("sample_") else 500


def _short_reason(name: str, error: str, code: str | None) -> str:
    """A reason without internals: no file paths, library build strings or tracebacks reach the client."""
    if code and code.startswith(("image_", "empty_", "sample_")):
        return error
    failed = sorted(set(re.findall(r"stage_error: (\w+):", error))) or [name]
    return f"the {'/'.join(failed)} model could not process this image"


@serve.ingress(api)
class Gateway:
    """HTTP ingress: keys, limits, reading and decoding bodies, metrics, and the routes."""

    def __init__(self, settings: dict, **handles):
        from ray.util.metrics import Counter, Histogram

        self.cfg = ServeSettings.model_validate(settings)
        self.keys = KeyRing(self.cfg.api_keys, os.environ.get(self.cfg.api_keys_env, ""), self.cfg.api_keys_file)
        self.handles = handles  # model name -> deployment handle, for the deployments this application has
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
        if not self.keys.accepts(request.headers.get("x-api-key")):
            raise HTTPException(401, detail="missing or invalid X-API-Key")

    def _check_size(self, size: int) -> None:
        if size > self.cfg.max_body_bytes:
            raise HTTPException(413, detail=f"body of {size} bytes > limit {self.cfg.max_body_bytes}")

    async def _read_uri(self, body: bytes) -> bytes:
        return await self._read_object(uri_from_body(body))

    async def _read_object(self, uri: str) -> bytes:
        """The object at a checked ``uri``: under a readable prefix, within the size limit, the store's state
        mapped to a status (404 missing, 503 + Retry-After unavailable, 502 otherwise)."""
        from jobs.common import storage, transient

        if has_dot_segment(uri) or not any(uri.startswith(prefix) for prefix in self.cfg.uri_prefixes):
            raise HTTPException(403, detail=f"{uri} is not under a readable prefix ({self.cfg.uri_prefixes})")
        try:
            data = await asyncio.to_thread(storage.read_bytes, uri, self.cfg.max_body_bytes)
        except storage.ObjectTooLarge as exc:
            raise HTTPException(413, detail=str(exc)) from None
        except FileNotFoundError:
            raise HTTPException(404, detail=f"no object at {uri}") from None
        except OSError as exc:
            if transient.is_transient(exc):  # the store is down or throttling: the object may well be fine
                retry = str(max(1, round(self.cfg.gateway.retry_after_s)))
                detail = "object store unavailable, retry later"
                raise HTTPException(503, detail=detail, headers={"Retry-After": retry}) from None
            raise HTTPException(502, detail=f"could not read {uri}: {exc}") from None
        return data

    async def _body(self, request: Request) -> bytes:
        """The request body, checked: key and size (a chunked upload without a length stops at the limit, too)."""
        self._check_key(request)
        declared = request.headers.get("content-length", "0")
        self._check_size(int(declared) if declared.isdigit() else 0)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            self._check_size(size)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _image(self, request: Request) -> bytes:
        """The request's image bytes, checked: key, size, and the header's format and pixel count."""
        from jobs.media.decode import DecodeError, probe_image

        body = await self._body(request)
        if not body:
            raise HTTPException(400, detail="empty body: send image bytes or JSON {'uri': ...}")
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await self._read_uri(body)
        try:
            probe_image(body, self.cfg.max_pixels)
        except DecodeError as exc:
            raise HTTPException(_decode_status(exc.code), detail=str(exc)) from None
        return body

    async def _sample(self, request: Request) -> dict[str, tuple[bytes, str]]:
        """A multi-modal sample: ``multipart/form-data`` with one file per modality (the field name is the
        modality, the file name's extension its kind: ``.png``, ``.npy``, ``.nii.gz``, ``.mp4``...), or JSON
        ``{"uris": {modality: uri}}`` naming objects under the readable prefixes."""
        body = await self._body(request)
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            files = await multipart_files(body, kind)
        elif kind.startswith("application/json"):
            uris = uris_from_body(body)
            data = await asyncio.gather(*(self._read_object(u) for u in uris.values()))
            files = {m: (d, u) for (m, u), d in zip(uris.items(), data, strict=True)}
        else:
            raise HTTPException(415, detail="send multipart/form-data (a file per modality) or JSON {'uris': {...}}")
        if not files:
            raise HTTPException(400, detail="no modalities: send one file (or URI) per modality")
        return files

    async def _call(self, name: str, body, **params):
        """One model call. A full model queue, or a replica that died or is restarting, becomes 503 + Retry-After;
        an image that fails to decode past its header 413/415; a model that cannot process this one image 422. The
        client gets a short reason, the log the whole error."""
        from ray.exceptions import RayActorError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

        retry = {"Retry-After": str(max(1, round(getattr(self.cfg, f"{name}_deployment").retry_after_s)))}
        try:
            result = await self.handles[name].predict.remote((body, params | {"max_pixels": self.cfg.max_pixels}))
        except BackPressureError:
            raise HTTPException(503, detail="over capacity, retry later", headers=retry) from None
        except (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError) as exc:
            log.warning("%s model unavailable: %s", name, exc)
            raise HTTPException(503, detail=f"the {name} model is restarting, retry later", headers=retry) from None
        except Exception:
            log.exception("%s model failed", name)
            raise HTTPException(500, detail=f"internal error in the {name} model") from None
        error, code = result.pop("error", None), result.pop("error_code", None)
        if error:
            status = _error_status(code)
            log.log(logging.INFO if status < 500 else logging.ERROR, "%s: %s (%s)", name, error, code)
            raise HTTPException(status, detail=_short_reason(name, error, code))
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

    @api.post("/v1/scorefusion", response_model=ScoreFusionResult, openapi_extra=SAMPLE_BODY)
    async def scorefusion_route(self, request: Request) -> dict:
        async def work():
            if "scorefusion" not in self.handles:
                raise HTTPException(404, detail="no multi-modal model here: models.scorefusion.checkpoint is unset")
            return await self._call("scorefusion", await self._sample(request))

        return await self._timed("scorefusion", work())


def user_config(cls: type[Model], settings: ServeSettings) -> dict:
    """What a model deployment's ``reconfigure`` receives: its model sections and batch settings."""
    d = getattr(settings, f"{cls.name}_deployment")
    return {
        "models": settings.models.model_dump(mode="json", include=set(cls.sections), exclude_defaults=True),
        "max_batch_size": d.max_batch_size,
        "batch_wait_timeout_s": d.batch_wait_timeout_s,
    }


def build_app(settings: ServeSettings, optional: list[str] | None = None):
    """The application: model deployments bound into the gateway, every option from ``settings``; ``optional``
    as :func:`serve.models.deployed` takes it."""
    bound = {}
    for name, cls in deployed(settings.models, optional).items():
        options = _options(getattr(settings, f"{name}_deployment"))
        bound[name] = serve.deployment(cls, name=cls.__name__, user_config=user_config(cls, settings), **options).bind()
    gateway = settings.model_dump(mode="json", exclude={"models"})  # a new checkpoint leaves the gateway alone
    return serve.deployment(Gateway, **_options(settings.gateway)).bind(gateway, **bound)


def app_builder(args: dict):
    """The application from ``args``: ``{"settings": <ServeSettings as a dict>}`` or ``{"config": <YAML path>}``
    (relative: the working directory first, then the repository); no args: the defaults. ``serve run`` and
    ``serve deploy`` reach it through a Serve config file (:func:`serve_config`)."""
    if "settings" in args:
        return build_app(ServeSettings.model_validate(args["settings"]), args.get("optional", []))
    return build_app(load_serve_settings(args.get("config")))


def serve_config(settings: ServeSettings) -> dict:
    """The Serve config file (``serve run`` / ``serve deploy``) for ``settings``.

    Serve rebuilds an application, replacing every replica, when its ``import_path`` or ``args`` change, but
    applies a change of a deployment's ``user_config`` in place by calling ``reconfigure``. So the args carry
    everything except the models, and each model deployment's sections go into its ``user_config`` override:
    deploying this again with a new checkpoint loads it in the running replicas while requests go on. The
    optional deployments made (``args.optional``) are part of the args: adding one rebuilds the application.
    """
    optional = [name for name in deployed(settings.models) if name in OPTIONAL]
    app = {
        "name": APP_NAME,
        "route_prefix": "/",
        "import_path": "serve.app:app_builder",
        "args": {"settings": settings.model_dump(mode="json", exclude={"models"}, exclude_defaults=True)}
        | ({"optional": sorted(optional)} if optional else {}),
        "deployments": [
            {"name": cls.__name__, "user_config": user_config(cls, settings)}
            for cls in deployed(settings.models).values()
        ],
    }
    return {"proxy_location": "EveryNode", "http_options": _http_options(settings), "applications": [app]}


def _http_options(settings: ServeSettings) -> dict:
    return {"host": settings.host, "port": settings.port, "request_timeout_s": settings.request_timeout_s}


def start(settings: ServeSettings, address: str | None = None, num_cpus: int | None = None, timeout_s: float = 600):
    """Connect to Ray (``address`` unset: a local Ray), start Serve's HTTP proxy on ``settings.host:port`` and
    deploy :func:`serve_config` the way ``serve run <config file>`` does; returns the base URL. Called again with
    new checkpoints, it updates the running replicas in place."""
    import ray
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ApplicationStatus, ServeDeploySchema

    if not ray.is_initialized():
        ray.init(address=address or "local", num_cpus=None if address else num_cpus, include_dashboard=False)
    client = serve_start(http_options=_http_options(settings))
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
    for cls in deployed(settings.models).values():
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
