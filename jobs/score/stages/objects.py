"""The ``objects`` stage: faces and persons, with a fixed-size crop of each.

The detector (``stages.objects.detector``; see :mod:`jobs.media.detect` for the OpenCV default and the TorchScript /
ONNX contract) is built once per actor. Per image, the boxes are in the original image's pixels (``x0, y0, x1, y1``,
x1 and y1 exclusive), highest score first; each crop is its box widened by ``crop_margin`` on each side, resized to
``crop_size`` square and stored as JPEG bytes. An image without objects gets empty lists and a count of 0.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa

from jobs.common.config import ObjectsConfig
from jobs.media.detect import build_detector, detect
from jobs.media.images import crop_box, encode_image, square
from jobs.score.stages.base import Stage


def pixel_box(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """A float box -> the integer pixels that cover it, clipped to the image and at least one pixel wide."""
    x0 = min(max(0, int(np.floor(box[0]))), width - 1)
    y0 = min(max(0, int(np.floor(box[1]))), height - 1)
    x1 = max(min(width, int(np.ceil(box[2]))), x0 + 1)
    y1 = max(min(height, int(np.ceil(box[3]))), y0 + 1)
    return x0, y0, x1, y1


def jpeg_crop(image: np.ndarray, box: tuple[int, int, int, int], size: int, quality: int = 90) -> bytes:
    """JPEG bytes of ``image[y0:y1, x0:x1]`` resized to ``size x size``."""
    x0, y0, x1, y1 = box
    return encode_image(square(image[y0:y1, x0:x1], size), "JPEG", quality=quality)


class ObjectsStage(Stage):
    """Adds the ``obj_*`` columns."""

    name: ClassVar[str] = "objects"
    columns: ClassVar[dict[str, pa.DataType]] = {
        "obj_boxes": pa.list_(pa.list_(pa.int32())),
        "obj_labels": pa.list_(pa.string()),
        "obj_scores": pa.list_(pa.float32()),
        "obj_count": pa.int32(),
        "obj_crops": pa.list_(pa.binary()),
        "obj_model": pa.string(),
    }
    cfg: ObjectsConfig

    def __init__(self, cfg: ObjectsConfig):
        super().__init__(cfg)
        self.detector = build_detector(cfg)

    def process(self, images: list[np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {name: [] for name in self.columns}
        for image in images:
            height, width = image.shape[:2]
            dets = detect(self.detector, image, self.cfg)
            boxes = [pixel_box(box, width, height) for box in dets.boxes]
            crops = [crop_box(box, self.cfg.crop_margin, width, height) for box in boxes]
            out["obj_boxes"].append([list(box) for box in boxes])
            out["obj_labels"].append([self.detector.labels[int(k)] for k in dets.labels])
            out["obj_scores"].append([float(s) for s in dets.scores])
            out["obj_count"].append(len(boxes))
            out["obj_crops"].append([jpeg_crop(image, crop, self.cfg.crop_size) for crop in crops])
            out["obj_model"].append(self.detector.version)
        return out
