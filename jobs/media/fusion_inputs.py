"""Inputs of the fusion scorer from a scored row: the same code builds the training cache and serves the stage.

Ray-free. A row of ``mediascore score`` output with the ``text_embed`` and ``objects`` columns, plus the row's
decoded pixels, becomes fixed-shape arrays:

* text: ``text_tokens`` ``(T, 384)``, ``text_token_mask`` ``(T,)``, ``text_sentence`` ``(384,)``, ``text_present``;
* ``style_image`` ``(S, S, 3)`` uint8: the whole image at the upstream CNN's size;
* ``obj_images`` ``(K, O, O, 3)`` uint8, ``obj_kind`` ``(K,)`` (0 face, 1 body) and ``obj_mask`` ``(K,)``: the
  objects stage's crops, highest score first, at most ``max_objects``;
* ``image`` ``(I, I, 3)`` uint8: the whole image for the key module.

The training cache (:func:`encode_upstream`) replaces ``style_image`` and ``obj_images`` by the frozen upstream
CNN's pooled maps (``style_map``, ``obj_maps``), so the frozen part runs once and not every epoch; with
``freeze_upstream: false`` it keeps the pixels, and the upstream runs (and learns) in every training step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from jobs.media.images import square
from jobs.media.images import to_tensor_batch as normalize
from jobs.media.text import DIM

OBJECT_KINDS: dict[str, int] = {"face": 0, "person": 1, "body": 1}
"""Detector label -> object token kind (``models.fusion.OBJECT_KINDS``); other labels are left out."""
PIXEL_KEYS = ("style_image", "obj_images", "image")


def _decode_jpeg(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("undecodable object crop")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def text_inputs(row: Mapping[str, Any], max_tokens: int) -> dict[str, np.ndarray]:
    """Padded word features, mask, sentence feature and presence; no text gives zeros and ``present=False``."""
    tokens = np.zeros((max_tokens, DIM), np.float32)
    mask = np.zeros(max_tokens, bool)
    sentence = np.zeros(DIM, np.float32)
    count = row.get("text_token_count")
    present = _present(count) and int(count) > 0 and _present(row.get("text_sentence"))
    if present:
        found = np.asarray([np.asarray(t, np.float32) for t in row["text_tokens"]], np.float32).reshape(-1, DIM)
        n = min(int(count), max_tokens, len(found))
        tokens[:n], mask[:n] = found[:n], True
        sentence[:] = np.asarray(row["text_sentence"], np.float32)
    return {
        "text_tokens": tokens,
        "text_token_mask": mask,
        "text_sentence": sentence,
        "text_present": np.bool_(present),
    }


def object_inputs(row: Mapping[str, Any], max_objects: int, size: int) -> dict[str, np.ndarray]:
    """Up to ``max_objects`` crops of known kinds, in the objects stage's order (highest score first)."""
    images = np.zeros((max_objects, size, size, 3), np.uint8)
    kinds = np.zeros(max_objects, np.int64)
    mask = np.zeros(max_objects, bool)
    crops = row.get("obj_crops")
    labels = row.get("obj_labels")
    j = 0
    for crop, label in zip(crops if _present(crops) else [], labels if _present(labels) else [], strict=False):
        if j == max_objects or label not in OBJECT_KINDS:
            continue
        images[j], kinds[j], mask[j] = square(_decode_jpeg(crop), size), OBJECT_KINDS[label], True
        j += 1
    return {"obj_images": images, "obj_kind": kinds, "obj_mask": mask}


def row_inputs(image: np.ndarray, row: Mapping[str, Any], cfg, max_tokens: int) -> dict[str, np.ndarray]:
    """Every model input of one row (``cfg`` is a :class:`models.fusion.FusionConfig`)."""
    return {
        **text_inputs(row, max_tokens),
        **object_inputs(row, cfg.max_objects, cfg.object_size),
        "style_image": square(image, cfg.style_size),
        "image": square(image, cfg.image_size),
    }


def stack(rows: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-row input dicts -> one batch dict of arrays with a leading batch axis."""
    return {key: np.stack([r[key] for r in rows]) for key in rows[0]}


def to_tensors(batch: Mapping[str, np.ndarray], device=None) -> dict:
    """A numpy batch -> model inputs on ``device``: pixel arrays normalized to ``(B, [K,] 3, S, S)``."""
    import torch

    out = {}
    for key, value in batch.items():
        arr = np.asarray(value)
        if key in PIXEL_KEYS:
            out[key] = normalize(arr)
        elif arr.dtype.kind in "biuf":
            out[key] = torch.tensor(arr)  # a copy: cache cells are read-only buffers
    return {k: v.to(device) for k, v in out.items()} if device is not None else out


def encode_upstream(model, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The cache form of a batch: with a frozen upstream CNN (``freeze_upstream``), its pixels replaced by the
    CNN's pooled maps (float16); an upstream that trains needs the pixels, and the batch stays as it is."""
    import torch

    if not model.cfg.freeze_upstream:
        return dict(batch)
    out = {k: v for k, v in batch.items() if k not in ("style_image", "obj_images")}
    with torch.no_grad():
        model.eval()
        out["style_map"] = model.upstream_maps(normalize(batch["style_image"])).numpy().astype(np.float16)
        objs = np.asarray(batch["obj_images"])  # (B, K, O, O, 3)
        maps = model.upstream_maps(normalize(objs.reshape(-1, *objs.shape[2:])))  # (B*K, C, s, s)
        out["obj_maps"] = maps.numpy().astype(np.float16).reshape(*objs.shape[:2], *maps.shape[1:])
    return out


def pack(batch: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    """Array columns -> one bytes cell per row (plain Parquet, no tensor extension types), and their specs."""
    cells, specs = {}, {}
    for key, value in batch.items():
        arr = np.ascontiguousarray(value)
        specs[key] = [arr.dtype.str, list(arr.shape[1:])]
        column = np.empty(len(arr), dtype=object)
        for i in range(len(arr)):
            column[i] = arr[i].tobytes()
        cells[key] = column
    return cells, specs


def unpack(cells: Mapping[str, Sequence[bytes]], specs: Mapping[str, list]) -> dict[str, np.ndarray]:
    """The inverse of :func:`pack` for the columns in ``specs``."""
    out = {}
    for key, (dtype, shape) in specs.items():
        out[key] = np.stack([np.frombuffer(c, dtype=dtype).reshape(shape) for c in cells[key]])
    return out
