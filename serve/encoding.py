"""Mask encodings of ``/v1/localize``. Ray-free.

* ``rle``: COCO's uncompressed run-length encoding, ``{"size": [h, w], "counts": [...]}``: run lengths over the
  mask read column by column (Fortran order), starting with a run of zeros (possibly empty). pycocotools and most
  segmentation tools read it as it is.
* ``png``: a one-channel PNG (0 / 255), base64 in the JSON.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

MASK_FORMATS = ("rle", "png", "none")


def mask_to_rle(mask: np.ndarray) -> dict:
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def rle_to_mask(rle: dict) -> np.ndarray:
    height, width = rle["size"]
    values = np.arange(len(rle["counts"])) % 2 == 1
    flat = np.repeat(values, rle["counts"])
    if flat.size != height * width:
        raise ValueError(f"RLE counts cover {flat.size} pixels, size says {height * width}")
    return flat.reshape((height, width), order="F")


def mask_to_png(mask: np.ndarray) -> dict:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).save(buf, format="PNG", optimize=True)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "png": base64.b64encode(buf.getvalue()).decode()}


def png_to_mask(encoded: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded["png"])))) > 127


def encode_mask(mask: np.ndarray, fmt: str) -> dict | None:
    if fmt not in MASK_FORMATS:
        raise ValueError(f"unknown mask format {fmt!r}; one of {', '.join(MASK_FORMATS)}")
    if fmt == "none":
        return None
    return {"format": fmt} | (mask_to_rle(mask) if fmt == "rle" else mask_to_png(mask))
