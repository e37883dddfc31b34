"""Image helpers shared by stages, jobs and serve: normalization constants, resizing, tensors, crops. Ray-free."""

from __future__ import annotations

import functools
import io
import threading

import cv2
import numpy as np
from PIL import Image

from jobs.common import storage
from jobs.media.decode import decode_image

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def square(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, C)`` -> ``(size, size, C)``, aspect ignored (as the networks are trained): area averaging when it
    shrinks, bilinear when it grows."""
    interp = cv2.INTER_AREA if min(image.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=interp)


def fit_within(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``image`` with its longer side at most ``max_side`` pixels (area averaging), and the factor applied
    (1.0: untouched, the same array)."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def load_resized(uri: str, size: int) -> np.ndarray:
    """Decode an image from storage and resize it to ``(size, size, 3)`` uint8 (:func:`square`)."""
    pixels, _ = decode_image(storage.read_bytes(uri))
    return square(pixels, size)


def to_tensor_batch(images: np.ndarray):
    """uint8 ``(..., S, S, 3)`` -> ImageNet-normalized float ``(..., 3, S, S)`` torch tensor: the one normalization
    of every RGB network here except the quality judge (it reads ``[0, 1]``: :func:`jobs.media.quality.to_tensor`)."""
    import torch

    x = (images.astype(np.float32) - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, -3)))


def grid_crops(image: np.ndarray, size: int, limit: int) -> np.ndarray:
    """Up to ``limit`` non-overlapping ``size`` crops spread over the image at native resolution ``(n, S, S, 3)``
    (a smaller image is padded by reflection to one crop)."""
    h, w = image.shape[:2]
    if h < size or w < size:
        image = np.pad(image, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)), mode="reflect")
        h, w = image.shape[:2]
    ys = np.linspace(0, h - size, max(1, min(h // size, int(np.sqrt(limit))))).astype(int)
    xs = np.linspace(0, w - size, max(1, min(w // size, int(np.ceil(limit / len(ys)))))).astype(int)
    return np.stack([image[y : y + size, x : x + size] for y in ys for x in xs][:limit])


def crop_box(box: tuple[int, int, int, int], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """``box`` widened by ``margin`` of its size on each side, clipped to the image."""
    x0, y0, x1, y1 = box
    dx, dy = round((x1 - x0) * margin), round((y1 - y0) * margin)
    return max(0, x0 - dx), max(0, y0 - dy), min(width, x1 + dx), min(height, y1 + dy)


_LOAD_LOCK = threading.Lock()


@functools.cache
def _photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
        image = image[0]
    image = np.asarray(image)
    if image.dtype == bool:  # horse: a silhouette
        image = np.where(image, 225, 40).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3].astype(np.uint8))


def photo(name: str) -> np.ndarray:
    """A scikit-image sample photo as (H, W, 3) uint8 RGB, loaded once per process."""
    with _LOAD_LOCK:
        return _photo(name)


def encode_image(pixels: np.ndarray, fmt: str = "PNG", quality: int = 95) -> bytes:
    """RGB (or grey) uint8 pixels -> the bytes of a ``PNG``, ``JPEG`` or ``WEBP`` file (``quality`` for the lossy
    two), by Pillow with its default settings otherwise."""
    buf = io.BytesIO()
    fmt = fmt.upper()
    Image.fromarray(pixels).save(buf, format=fmt, **({"quality": quality} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()
