"""Typed config of ``mediascore serve``: the models (the same sections ``mediascore score`` reads), request
limits, API keys and one section per deployment.

A relative local checkpoint path is taken relative to the repository, as in the demo config, so that replicas
find it whatever their working directory; ``s3://`` URIs are read with the standard AWS variables.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from jobs.common.config import ModelSections, StrictModel, load_yaml


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


class ServeModels(ModelSections):
    """The model sections, exactly as in a ``mediascore score`` config (their ``resources`` are not used here:
    each deployment has its own)."""


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
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    score_deployment: DeploymentSettings = DeploymentSettings(num_cpus=0.5)
    localize_deployment: DeploymentSettings = DeploymentSettings()
    ocr_deployment: DeploymentSettings = DeploymentSettings()
    restore_deployment: DeploymentSettings = DeploymentSettings(max_batch_size=4)
    gateway: DeploymentSettings = DeploymentSettings(num_cpus=0.1, max_ongoing_requests=256, max_queued_requests=512)


def load_serve_settings(path: str | Path | None = None, overrides: dict | None = None) -> ServeSettings:
    """A serve config; a relative ``path`` is found as every command finds one (``jobs.common.config.resolve_path``)."""
    return load_yaml(ServeSettings, path, overrides)
