"""Data for the CAM localizer: the corpus manifest -> resized images, labels, and localization ground truth.

Ray-free. Images are resized to a square ``size`` ignoring their aspect ratio (the usual WSOL practice); boxes and
masks are scaled the same way. The ground truth of an image is every object of its labelled class (distractors and
objects of other classes are not part of it).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from jobs.common import storage


def read_manifest(uri: str) -> pd.DataFrame:
    fs, path = storage.resolve(uri)
    return pd.read_parquet(path, filesystem=fs)


def labelled_images(manifest: pd.DataFrame, splits: list[str], image_types: list[str]) -> pd.DataFrame:
    """Images (not videos, not broken) of the given splits and image types that carry a label."""
    keep = (
        (manifest.media_type == "image")
        & manifest.broken.isna()
        & manifest.label.notna()
        & manifest.split.isin(splits)
        & manifest.image_type.isin(image_types)
    )
    return manifest[keep].reset_index(drop=True)


@dataclass
class LocSample:
    """Localization ground truth of one image at the evaluation size."""

    label: str
    boxes: list[tuple[int, int, int, int]]
    mask: np.ndarray | None  # bool (S, S)


def ground_truth(row, size: int) -> LocSample:
    """Boxes and mask of the objects of ``row.label``, scaled to ``size x size``."""
    sx, sy = size / row.width, size / row.height
    ids, boxes = [], []
    for obj in row.objects:
        if obj["cls"] == row.label and not obj["distractor"]:
            ids.append(obj["instance_id"])
            boxes.append(
                (
                    int(np.floor(obj["x0"] * sx)),
                    int(np.floor(obj["y0"] * sy)),
                    int(np.ceil(obj["x1"] * sx)),
                    int(np.ceil(obj["y1"] * sy)),
                )
            )
    mask = None
    if row.mask_png is not None:
        instances = np.asarray(Image.open(io.BytesIO(row.mask_png)))
        full = np.isin(instances, ids).astype(np.uint8)
        mask = cv2.resize(full, (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    return LocSample(label=row.label, boxes=boxes, mask=mask)
