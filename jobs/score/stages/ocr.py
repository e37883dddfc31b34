"""The ``ocr`` stage: text lines, their quadrilaterals and confidences, in reading order (see :mod:`jobs.media.ocr`).

A frame without text gets ``ocr_text = ""`` and ``ocr_count = 0`` (not null: null means the stage did not run or
failed on the row); ``ocr_skipped`` says the cheap presence check ruled the frame text-free, so recognition did not
run on it.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa

from jobs.common.config import OcrConfig
from jobs.score.stages.base import Stage


class OcrStage(Stage):
    """Adds the ``ocr_*`` columns."""

    name: ClassVar[str] = "ocr"
    columns: ClassVar[dict[str, pa.DataType]] = {
        "ocr_text": pa.string(),
        "ocr_lines": pa.list_(pa.string()),
        "ocr_boxes": pa.list_(pa.list_(pa.int32(), 8)),
        "ocr_scores": pa.list_(pa.float32()),
        "ocr_count": pa.int32(),
        "ocr_skipped": pa.bool_(),
    }
    cfg: OcrConfig

    def __init__(self, cfg: OcrConfig):
        from jobs.media.ocr import OcrEngine

        super().__init__(cfg)
        self.engine = OcrEngine(cfg)

    def process(self, images: list[np.ndarray]) -> dict[str, list]:
        results = self.engine(images)
        return {
            "ocr_text": [r.text for r in results],
            "ocr_lines": [[line.text for line in r.lines] for r in results],
            "ocr_boxes": [[line.quad for line in r.lines] for r in results],
            "ocr_scores": [[line.score for line in r.lines] for r in results],
            "ocr_count": [len(r.lines) for r in results],
            "ocr_skipped": [r.skipped for r in results],
        }
