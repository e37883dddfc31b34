"""Synthetic inputs of the stage benchmark: images with and without English text, with and without a face.

Deterministic from the seed: JPEG and PNG images of 480 to 800 pixels on gradient, soft colour-blob or photo
backgrounds (crops of scikit-image's ``chelsea``, ``coffee``, ``camera`` and ``astronaut``, which hold no text),
about half with a face blended in (an LFW face scaled up, or the astronaut's head). Every other image carries one
to three rendered English phrases (26 to 52 pixels high); the rest carry no text.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw

from jobs.corpus.fonts import font, text_bbox

BACKGROUNDS = ("gradient", "blobs", "chelsea", "coffee", "camera", "astronaut")  # the photos hold no text
SIZES = ((640, 480), (800, 600), (480, 640), (720, 540))
WORDS = (
    "open", "daily", "fresh", "coffee", "market", "street", "sale", "north", "station", "garden", "river", "welcome",
    "city", "park", "exit", "hotel", "bakery", "music", "night", "summer", "library", "museum", "free", "parking",
    "bridge", "tickets", "menu", "today", "closed", "entrance",
)  # fmt: skip
ASTRONAUT_HEAD = (slice(30, 210), slice(140, 310))  # the face (173, 68)-(273, 168) with a margin; no text in it


@dataclass(frozen=True)
class Input:
    key: str
    background: str
    has_text: bool
    has_face: bool
    data: bytes


@functools.cache
def _skimage(name: str) -> np.ndarray:
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    if name == "lfw_subset":  # (200, 25, 25) floats in [0, 1]: 100 faces, then 100 non-faces
        return image
    return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3])


def _background(kind: str, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    if kind == "gradient":
        t = np.linspace(0, 1, width)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, height)[:, None, None]
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        return np.broadcast_to(a + t * (b - a), (height, width, 3)).astype(np.uint8)
    if kind == "blobs":
        coarse = rng.integers(40, 216, 3) + rng.integers(-40, 41, (6, 8, 3))
        return cv2.resize(coarse.clip(0, 255).astype(np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    photo = _skimage(kind)
    h, w = photo.shape[:2]
    ch, cw = int(h * rng.uniform(0.7, 1.0)), int(w * rng.uniform(0.7, 1.0))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return cv2.resize(photo[y0 : y0 + ch, x0 : x0 + cw], (width, height), interpolation=cv2.INTER_LINEAR)


def _paste_face(image: np.ndarray, rng: np.random.Generator) -> None:
    """An LFW face scaled up 4 to 6 times, or the astronaut's head, blended in through a soft ellipse."""
    if rng.random() < 0.5:
        tile = _skimage("lfw_subset")[int(rng.integers(0, 100))]
        side = 25 * int(rng.integers(4, 7))
        face = cv2.resize(np.round(tile * 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_CUBIC)
    else:
        scale = rng.uniform(0.7, 1.2)
        face = cv2.resize(_skimage("astronaut")[ASTRONAUT_HEAD], None, fx=scale, fy=scale)
    face = (face if face.ndim == 3 else np.repeat(face[:, :, None], 3, axis=2)).astype(np.float32)
    (h, w), (fh, fw) = image.shape[:2], face.shape[:2]
    y0, x0 = int(rng.integers(0, h - fh)), int(rng.integers(0, w - fw))
    yy, xx = np.mgrid[0:fh, 0:fw]
    radius = ((yy - fh / 2) / (fh / 2)) ** 2 + ((xx - fw / 2) / (fw / 2)) ** 2
    mask = np.clip((1.0 - radius) / 0.35, 0, 1)[:, :, None]  # (fh, fw, 1)
    region = image[y0 : y0 + fh, x0 : x0 + fw].astype(np.float32)
    image[y0 : y0 + fh, x0 : x0 + fw] = np.round(mask * face + (1 - mask) * region).astype(np.uint8)


def _draw_text(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One to three phrases, each in its own horizontal band, dark on light or light on dark."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    h, w = image.shape[:2]
    lines = int(rng.integers(1, 4))
    band = h // lines
    for j in range(lines):
        phrase = " ".join(str(word) for word in rng.choice(WORDS, size=int(rng.integers(1, 4)), replace=False))
        size = int(rng.integers(26, 53))
        while text_bbox(phrase, "en", size)[2] > w - 24 and size > 20:
            size -= 4
        left, top, right, bottom = text_bbox(phrase, "en", size)
        x = int(rng.integers(12, max(13, w - right - 12)))
        y = j * band + int(rng.integers(4, max(5, band - bottom - 4)))
        box = (x + left - 6, y + top - 6, x + right + 6, y + bottom + 6)
        if rng.random() < 0.5:
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            draw.rectangle(box, fill=fill)
            luma = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
        else:
            luma = float(image[max(0, box[1]) : box[3], max(0, box[0]) : box[2]].mean())
        draw.text((x, y), phrase, font=font("en", size), fill=(15, 15, 15) if luma > 128 else (245, 245, 245))
    return np.asarray(canvas)


def make_inputs(n: int, seed: int) -> list[Input]:
    """``n`` images, text on the even ones; sorted names keep text and no-text rows interleaved in every batch."""
    rng = np.random.default_rng(seed)
    inputs = []
    for i in range(n):
        width, height = SIZES[int(rng.integers(len(SIZES)))]
        background = str(rng.choice(BACKGROUNDS))
        image = _background(background, rng, width, height).copy()
        has_face = bool(rng.random() < 0.5)
        if has_face:
            _paste_face(image, rng)
        has_text = i % 2 == 0
        if has_text:
            image = _draw_text(image, rng)
        fmt = "png" if rng.random() < 0.25 else "jpeg"
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format=fmt, **({"quality": 90} if fmt == "jpeg" else {}))
        key = f"img_{i:04d}.{'png' if fmt == 'png' else 'jpg'}"
        inputs.append(Input(key, background, has_text, has_face, buf.getvalue()))
    return inputs
