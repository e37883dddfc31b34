"""Encoding rendered images: format, quality and, for a few JPEGs, pixels stored rotated under an EXIF tag."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from jobs.corpus.spec import EXIF_P, IMAGE_FORMAT_P, IMAGE_FORMATS

EXIF_ORIENTATION_TAG = 0x0112
STORED_ROTATION = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,  # exif_transpose turns it back with ROTATE_270
    8: Image.Transpose.ROTATE_270,
}
PNG_LEVEL = 3


@dataclass(frozen=True)
class Encoding:
    """How one image is stored."""

    format: str
    quality: int
    orientation: int = 1


def choose_encoding(rng: np.random.Generator) -> Encoding:
    """Format, quality and EXIF orientation for one image; always the same number of draws."""
    fmt = IMAGE_FORMATS[int(rng.choice(len(IMAGE_FORMATS), p=IMAGE_FORMAT_P))]
    quality = int(rng.integers(78, 96))
    rotated = rng.random() < EXIF_P
    orientation = (3, 6, 8)[int(rng.integers(3))]
    return Encoding(fmt, quality, orientation if rotated and fmt == "jpeg" else 1)


def encode_image(rgb: np.ndarray, encoding: Encoding) -> bytes:
    """Encode (H, W, 3) uint8 display-orientation pixels; with an EXIF orientation the stored pixels are rotated
    so that ``PIL.ImageOps.exif_transpose`` gives ``rgb`` back."""
    image = Image.fromarray(rgb)
    buf = io.BytesIO()
    if encoding.format == "jpeg":
        kwargs = {"quality": encoding.quality}
        if encoding.orientation != 1:
            image = image.transpose(STORED_ROTATION[encoding.orientation])
            exif = Image.Exif()
            exif[EXIF_ORIENTATION_TAG] = encoding.orientation
            kwargs["exif"] = exif.tobytes()
        image.save(buf, format="JPEG", **kwargs)
    elif encoding.format == "webp":
        image.save(buf, format="WEBP", quality=encoding.quality, method=4)
    elif encoding.format == "png":
        image.save(buf, format="PNG", compress_level=PNG_LEVEL)
    else:
        raise ValueError(f"unknown image format {encoding.format!r}")
    return buf.getvalue()


def encode_mask(mask: np.ndarray) -> bytes:
    """PNG bytes of a (H, W) uint8 instance mask."""
    buf = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buf, format="PNG", compress_level=9)
    return buf.getvalue()
