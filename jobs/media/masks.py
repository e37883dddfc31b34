"""Mask encodings: the ``cam_mask`` column of ``score`` (``rle``) and the ``mask`` of ``/v1/localize``. Ray-free.

* ``rle``: COCO's uncompressed run-length encoding, ``{"size": [h, w], "counts": [...]}``: run lengths over the
  mask read column by column (Fortran order), starting with a run of zeros (possibly empty). pycocotools and most
  segmentation tools read it as it is.
* ``coco``: COCO's compressed RLE, ``{"size": [h, w], "counts": "<string>"}``, made by pycocotools, smaller for
  large masks and what COCO's annotation files hold.
* ``png``: a one-channel PNG (0 / 255), base64 in the JSON.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

MASK_FORMATS = ("rle", "coco", "png", "none")


def mask_to_rle(mask: np.ndarray) -> dict:
    """Uncompressed RLE. pycocotools writes only the compressed form (``coco``), so the runs are counted here."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def mask_to_coco(mask: np.ndarray) -> dict:
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict) -> np.ndarray:
    """A boolean mask from either RLE form (``counts`` a list: uncompressed; a string: compressed), read by
    pycocotools."""
    from pycocotools import mask as coco_mask

    height, width = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, list) and sum(counts) != height * width:  # pycocotools would pad or cut silently
        raise ValueError(f"RLE counts cover {sum(counts)} pixels, size says {height * width}")
    if isinstance(counts, str):
        compressed = {"size": [height, width], "counts": counts.encode("ascii")}
    else:
        compressed = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return coco_mask.decode(compressed).astype(bool)


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
    encoders = {"rle": mask_to_rle, "coco": mask_to_coco, "png": mask_to_png}
    return {"format": fmt} | encoders[fmt](mask)
