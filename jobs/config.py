"""Typed configuration for ``mediascore score``.

A YAML file is validated once into :class:`ScoreConfig`; an unknown key or a bad value fails at load with the
dotted path of the key. Defaults live here and nowhere else. Every stage has its own section under ``stages``
with the resources of its actor pool, so a cluster can put model stages on GPUs while CPUs decode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


M = TypeVar("M", bound=BaseModel)


class Resources(StrictModel):
    """Resources of one step's Ray Data operator, given at its ``map_batches`` call.

    ``concurrency`` is the number of actors, fixed (``2``) or autoscaling between bounds (``[1, 8]``).
    """

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    batch_size: int = Field(16, ge=1)
    concurrency: int | tuple[int, int] = 1

    @model_validator(mode="after")
    def _check_concurrency(self) -> Resources:
        bounds = (self.concurrency,) * 2 if isinstance(self.concurrency, int) else self.concurrency
        if bounds[0] < 1 or bounds[1] < bounds[0]:
            raise ValueError(f"concurrency must be >= 1 (or [min, max] with 1 <= min <= max), got {self.concurrency}")
        return self


class ListingConfig(StrictModel):
    """Which objects under the input count as media."""

    image_extensions: list[str] = [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"]
    video_extensions: list[str] = [".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"]
    min_size: int = Field(0, ge=0, description="objects smaller than this (bytes) are skipped")
    max_size: int | None = Field(None, ge=1, description="objects larger than this (bytes) are skipped")
    page_size: int = Field(1000, ge=1, le=1000)


class VideoSampling(StrictModel):
    """Which frames of a video become rows.

    ``interval``: the first frame at or after every ``interval_s`` seconds; ``fps``: the same at ``fps`` frames per
    second; ``keyframes``: keyframes only (non-key frames are not even decoded); ``all``: every frame. At most
    ``max_frames`` per video. Targets further than ``seek_threshold_s`` ahead are reached by seeking to the
    keyframe before them instead of decoding every frame in between.
    """

    policy: Literal["interval", "fps", "keyframes", "all"] = "interval"
    interval_s: float = Field(1.0, gt=0)
    fps: float = Field(1.0, gt=0)
    max_frames: int = Field(64, ge=1)
    seek_threshold_s: float = Field(2.0, ge=0)


class DecodeConfig(StrictModel):
    """Decoding of images and videos.

    ``mismatched_content`` decides what happens when the bytes are another kind of media than the name says
    (a video named ``.jpg``): ``reject`` dead-letters it (default: a pipeline that trusts names should hear about
    it), ``follow`` decodes it by its content.
    """

    max_pixels: int = Field(100_000_000, ge=1, description="decompression-bomb guard, checked before decoding")
    mismatched_content: Literal["reject", "follow"] = "reject"
    video: VideoSampling = VideoSampling()
    rows_per_block: int = Field(16, ge=1, description="decoded rows handed downstream at a time")
    resources: Resources = Resources(num_cpus=0.5, batch_size=4, concurrency=1)


class QualityConfig(StrictModel):
    """Image quality statistics (cheap, no model): sharpness, brightness, contrast, colourfulness, blockiness,
    noise. Statistics other than blockiness are computed on a copy resized to at most ``max_side`` pixels."""

    max_side: int = Field(512, ge=32)
    resources: Resources = Resources(num_cpus=0.5, batch_size=16, concurrency=1)


class CamConfig(StrictModel):
    """The CAM localizer stage (class, box, mask area, key-region crop)."""

    checkpoint: str | None = Field(None, description="URI of a checkpoint written by `mediascore train cam`")
    tau: float | None = Field(None, ge=0, le=1, description="CAM threshold; unset: the checkpoint's validation tau")
    box_mode: Literal["largest"] = "largest"
    crop_size: int = Field(128, ge=16)
    crop_margin: float = Field(0.1, ge=0, le=1)
    resources: Resources = Resources(num_cpus=1.0, batch_size=16, concurrency=1)


class StagesConfig(StrictModel):
    """The stages to run, in order, and one section per stage."""

    run: list[str] = ["quality"]
    fuse: Literal["none", "stages", "decode"] = Field(
        "none",
        description="none: one actor pool per stage; stages: all stages in one pool; decode: the stages run inside "
        "the decode actors, so no pixels cross the object store (small machines, CPU-only stages)",
    )
    quality: QualityConfig = QualityConfig()
    cam: CamConfig = CamConfig()

    @model_validator(mode="after")
    def _check_run(self) -> StagesConfig:
        known = [name for name in type(self).model_fields if name not in ("run", "fuse")]
        for name in self.run:
            if name not in known:
                raise ValueError(f"unknown stage {name!r} in stages.run; known stages: {', '.join(known)}")
        if len(set(self.run)) != len(self.run):
            raise ValueError(f"stages.run lists a stage twice: {self.run}")
        return self


class OutputConfig(StrictModel):
    """How results are written. One writer batch becomes one Parquet file (plus its commit record)."""

    rows_per_file: int = Field(512, ge=1)
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    num_cpus: float = Field(0.25, ge=0)
    concurrency: int = Field(1, ge=1)


class RayConfig(StrictModel):
    """Where to run. ``address`` unset: a local Ray on this machine."""

    address: str | None = None
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray; unset: all of this machine's")
    progress_bars: bool = False


class ScoreConfig(StrictModel):
    """Everything ``mediascore score`` needs besides its input and output URIs."""

    listing: ListingConfig = ListingConfig()
    decode: DecodeConfig = DecodeConfig()
    stages: StagesConfig = StagesConfig()
    output: OutputConfig = OutputConfig()
    ray: RayConfig = RayConfig()
    progress_interval_s: float = Field(5.0, gt=0)


class ConfigError(ValueError):
    """A config file that does not validate; the message names each bad key."""


def load_yaml(model: type[M], path: str | Path | None = None, overrides: dict | None = None) -> M:
    """Load a YAML file (``None``: no file, the defaults), merge ``overrides`` (a nested dict) into it and validate
    it as ``model``; every bad key is named in the :class:`ConfigError`."""
    data: dict = {}
    if path is not None:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    if overrides:
        data = _merge(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path or 'config'}: {problems}") from None


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> ScoreConfig:
    """The ``score`` config from YAML (``None``: the defaults), with ``overrides`` applied."""
    return load_yaml(ScoreConfig, path, overrides)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def dump_config(cfg: ScoreConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
