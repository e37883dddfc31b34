"""Typed config of ``mediascore serve``: the models (the same sections ``mediascore score`` reads), request
limits, API keys and one section per deployment.

A relative local checkpoint path is taken relative to the repository, as in the demo config, so that replicas
find it whatever their working directory; ``s3://`` URIs are read with the standard AWS variables.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from jobs.common import storage
from jobs.common.config import LabelSelector, ModelSections, StrictModel, load_yaml, resolve_path


class DeploymentSettings(StrictModel):
    """Batching, autoscaling, back-pressure and resources of one deployment."""

    max_batch_size: int = Field(8, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(4.0, gt=0, description="autoscaling aims at this many per replica")
    upscale_delay_s: float = Field(30.0, ge=0, description="load must stay above target this long to add replicas")
    downscale_delay_s: float = Field(600.0, ge=0, description="and below it this long to remove them")
    max_ongoing_requests: int = Field(16, ge=1)
    max_queued_requests: int = Field(32, ge=-1, description="beyond this the proxy answers 503 (-1: no limit)")
    retry_after_s: float = Field(1.0, ge=0)
    num_cpus: float = Field(0.25, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    label_selector: LabelSelector = Field({}, description="node labels the replicas need; empty: any node")


class ScoreFusionServeConfig(StrictModel):
    """``models.scorefusion``: a ``mediascore train scorefusion`` checkpoint for ``POST /v1/scorefusion``; unset,
    the route answers 404 and no deployment is made. ``missing`` as ``score --samples --missing``."""

    checkpoint: str | None = None
    missing: Literal["renormalise", "drop"] = "renormalise"


class ServeModels(ModelSections):
    """The model sections, exactly as in a ``mediascore score`` config (their ``resources`` are not used here:
    each deployment has its own), and the multi-modal samples model, which has no ``score`` stage."""

    scorefusion: ScoreFusionServeConfig = ScoreFusionServeConfig()

    def resolved(self) -> ServeModels:
        section = self.scorefusion.model_copy(update={"checkpoint": resolve_path(self.scorefusion.checkpoint)})
        return super().resolved().model_copy(update={"scorefusion": section})


class ServeSettings(StrictModel):
    """``mediascore serve`` config."""

    models: ServeModels = ServeModels()
    max_body_bytes: int = Field(20_000_000, ge=1)
    max_pixels: int = Field(40_000_000, ge=1)
    uri_prefixes: list[str] = Field(
        ["s3://"], description="a JSON body {'uri': ...} may name objects under these prefixes only; [] turns it off"
    )
    api_keys: list[str] = Field([], description="accepted X-API-Key values; empty (and none in the env): no key")
    api_keys_env: str = Field("MEDIASCORE_API_KEYS", description="comma-separated keys added from this variable")
    api_keys_file: str | None = Field(
        None, description="one key per line (# comments), read again whenever the file changes: no restart needed"
    )
    request_timeout_s: float = Field(120.0, gt=0, description="the HTTP proxy answers 408 past this")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    score_deployment: DeploymentSettings = DeploymentSettings(num_cpus=0.5)
    localize_deployment: DeploymentSettings = DeploymentSettings()
    ocr_deployment: DeploymentSettings = DeploymentSettings()
    restore_deployment: DeploymentSettings = DeploymentSettings(max_batch_size=4)
    scorefusion_deployment: DeploymentSettings = DeploymentSettings(max_batch_size=4)
    gateway: DeploymentSettings = DeploymentSettings(num_cpus=0.1, max_ongoing_requests=256, max_queued_requests=512)

    @field_validator("uri_prefixes")
    @classmethod
    def _prefixes(cls, prefixes: list[str]) -> list[str]:
        return [check_prefix(p) for p in prefixes]


def check_prefix(prefix: str) -> str:
    """A readable prefix as the gateway matches it: ``s3://`` (any bucket), ``s3://bucket/...`` or an absolute
    local directory, ending in ``/`` so that ``s3://media`` does not also open ``s3://media-private``.

    ``file://`` prefixes and relative paths are refused: a relative path means whatever the replica's working
    directory holds. Storage reads S3 and local paths only, so a body cannot reach an HTTP address (link-local or
    cloud metadata ones included); the S3 endpoint comes from the server's environment, never from a request.
    """
    if prefix == "s3://":
        return prefix
    if prefix.startswith("s3://"):
        storage.check_uri(prefix)
    elif not prefix.startswith("/"):
        raise ValueError(f"{prefix!r}: a prefix is s3://..., or an absolute directory (file:// is not served)")
    if has_dot_segment(prefix):
        raise ValueError(f"{prefix!r}: a prefix may not hold '.' or '..' segments")
    return prefix if prefix.endswith("/") else prefix + "/"


def has_dot_segment(uri: str) -> bool:
    """``uri`` has a ``.`` or ``..`` path segment (``/`` or ``\\`` separated), which a local filesystem, or a store
    that normalizes keys, would resolve outside the prefix it seems to be under."""
    path = uri.split("://", 1)[-1]
    return any(part in (".", "..") for part in re.split(r"[/\\]", path))


def load_serve_settings(path: str | Path | None = None, overrides: dict | None = None) -> ServeSettings:
    """A serve config; a relative ``path`` is found as every command finds one (``jobs.common.config.resolve_path``)."""
    return load_yaml(ServeSettings, path, overrides)
