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

from jobs import storage
from jobs.decode import decode_image

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


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


def load_resized(uri: str, size: int) -> np.ndarray:
    """Decode an image from storage and resize it to ``(size, size, 3)`` uint8."""
    pixels, _ = decode_image(storage.read_bytes(uri), max_pixels=100_000_000)
    return cv2.resize(pixels, (size, size), interpolation=cv2.INTER_AREA)


def to_tensor_batch(images: np.ndarray):
    """uint8 ``(B, S, S, 3)`` -> normalized float ``(B, 3, S, S)`` torch tensor."""
    import torch

    x = (images.astype(np.float32) - MEAN) / STD  # (B, S, S, 3)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


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
