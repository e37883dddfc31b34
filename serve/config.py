"""Typed config of ``mediascore serve``: checkpoints, request limits, API keys and one section per deployment."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from jobs.config import OcrConfig, StrictModel, load_yaml


class DeploymentSettings(StrictModel):
    """Batching, autoscaling, back-pressure and resources of one model deployment."""

    max_batch_size: int = Field(8, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(4.0, gt=0)
    max_ongoing_requests: int = Field(16, ge=1)
    max_queued_requests: int = Field(32, ge=-1, description="beyond this the proxy answers 503 (-1: no limit)")
    retry_after_s: float = Field(1.0, ge=0)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)


class ServeSettings(StrictModel):
    """``mediascore serve`` config."""

    restore_checkpoint: str = "checkpoints/restore_tiny.pt"
    quality_checkpoint: str = "checkpoints/quality_tiny.pt"
    ocr: OcrConfig = OcrConfig()
    max_body_bytes: int = Field(20_000_000, ge=1)
    max_pixels: int = Field(40_000_000, ge=1)
    api_keys: list[str] = Field([], description="accepted X-API-Key values; empty: no key needed")
    api_keys_env: str = Field("MEDIASCORE_API_KEYS", description="comma-separated keys added from this variable")
    host: str = "127.0.0.1"
    port: int = 8000
    ocr_deployment: DeploymentSettings = DeploymentSettings()
    restore_deployment: DeploymentSettings = DeploymentSettings(max_batch_size=4)
    gateway: DeploymentSettings = DeploymentSettings(num_cpus=0.1, max_ongoing_requests=64, max_queued_requests=128)


def load_serve_settings(path: str | Path | None = None, overrides: dict | None = None) -> ServeSettings:
    return load_yaml(ServeSettings, path, overrides)
