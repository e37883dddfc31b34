"""The ``restore`` stage: frames judged below a quality threshold are restored, stored, and judged again.

The quality classifier (the one the generator was trained with, unless the config names another) gives each frame
a quality number on the method's 0-100 scale. Frames below ``threshold`` go through the generator (tiled, seams
blended) and the classifier judges the restored frame too. With the quality gate on (``gate``, the default) the
restored frame replaces the original only when it is rated at least ``gate_margin`` points higher: then it is
written to ``output`` under a name derived from the source URI and frame index (a retry overwrites it) and
``restore_applied`` is true; otherwise the original stands, ``restore_rejected`` is true and
``restore_quality_after`` still says what the restorer reached. Frames at or above the threshold keep their
quality number and no restored copy (neither applied nor rejected).
"""

from __future__ import annotations

import hashlib
from typing import ClassVar

import numpy as np
import pyarrow as pa

from jobs.common import storage
from jobs.common.config import RestoreStageConfig
from jobs.media.images import encode_image
from jobs.score.stages.base import Stage


def restored_name(source_uri: str, frame_index: int | None, fmt: str) -> str:
    """Object name of a restored frame: stable for a (source, frame), so a retried batch overwrites it."""
    digest = hashlib.sha1(source_uri.encode()).hexdigest()[:16]
    frame = "" if frame_index is None or frame_index < 0 else f"_f{int(frame_index):06d}"
    return f"{digest}{frame}.{'jpg' if fmt == 'jpeg' else 'png'}"


class RestoreStage(Stage):
    """Adds the ``restore_*`` columns."""

    name: ClassVar[str] = "restore"
    columns: ClassVar[dict[str, pa.DataType]] = {
        "restore_applied": pa.bool_(),
        "restore_rejected": pa.bool_(),
        "restore_quality_before": pa.float32(),
        "restore_quality_after": pa.float32(),
        "restore_uri": pa.string(),
        "restore_model": pa.string(),
    }
    cfg: RestoreStageConfig

    def __init__(self, cfg: RestoreStageConfig):
        from jobs.media.quality import QualityJudge
        from jobs.media.restorer import Restorer

        super().__init__(cfg)
        if not cfg.checkpoint:
            raise ValueError("stages.restore.checkpoint is required: a generator.pt from `mediascore train restore`")
        if not cfg.output:
            raise ValueError("stages.restore.output is required (mediascore score sets it to <output>/restored)")
        self.restorer = Restorer(cfg.checkpoint, tile=cfg.tile, overlap=cfg.overlap)
        quality = cfg.quality_checkpoint or self.restorer.meta["data"]["quality_checkpoint"]
        self.judge = QualityJudge(quality, device=str(self.restorer.device))

    def process_rows(self, batch: dict[str, np.ndarray], rows: list[int]) -> dict[str, list]:
        out: dict[str, list] = {name: [] for name in self.columns}
        images = [batch["pixels"][i] for i in rows]
        before, _ = self.judge.judge(images)
        for i, image, quality in zip(rows, images, before, strict=True):
            tried = quality < self.cfg.threshold
            uri, after, applied = None, float("nan"), False
            if tried:
                restored = self.restorer(image)
                after = self.judge.judge([restored])[0][0]
                applied = gate_accepts(quality, after, self.cfg)
            if applied:
                name = restored_name(str(batch["source_uri"][i]), _frame(batch, i), self.cfg.format)
                uri = storage.join(self.cfg.output, name)
                storage.write_bytes(uri, _encode(restored, self.cfg.format))
            out["restore_applied"].append(applied)
            out["restore_rejected"].append(tried and not applied)
            out["restore_quality_before"].append(quality)
            out["restore_quality_after"].append(after)
            out["restore_uri"].append(uri)
            out["restore_model"].append(self.restorer.version)
        return out


def gate_accepts(before: float, after: float, cfg: RestoreStageConfig) -> bool:
    """Whether a restored frame replaces the original: always without the gate, else when the judge rates it at
    least ``gate_margin`` points above the original."""
    return not cfg.gate or after >= before + cfg.gate_margin


def _frame(batch: dict[str, np.ndarray], i: int) -> int | None:
    if "frame_index" not in batch or batch["frame_index"][i] is None:
        return None
    return int(batch["frame_index"][i])


def _encode(image: np.ndarray, fmt: str) -> bytes:
    return encode_image(image, "JPEG" if fmt == "jpeg" else "PNG", quality=95)
