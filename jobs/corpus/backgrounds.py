"""Backgrounds: crops of the photos that ship with scikit-image, paper for sketches, flat colours for cartoons."""

from __future__ import annotations

import cv2
import numpy as np

from jobs.corpus.scene import Background
from jobs.media.images import photo


def photo_crop(background: Background, width: int, height: int) -> np.ndarray:
    """A crop of the background photo with the target aspect, resized to (height, width, 3)."""
    src = photo(background.source)
    sh, sw = src.shape[:2]
    scale, fx, fy = background.crop
    aspect = width / height
    cw = min(sw, sh * aspect) * scale  # the largest crop with the target aspect, scaled down
    ch = cw / aspect
    x0 = int(round(fx * (sw - cw)))
    y0 = int(round(fy * (sh - ch)))
    crop = src[y0 : y0 + max(1, int(ch)), x0 : x0 + max(1, int(cw))]
    if background.flip:
        crop = crop[:, ::-1]
    interp = cv2.INTER_AREA if crop.shape[1] > width else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=interp)


def paper(background: Background, width: int, height: int) -> np.ndarray:
    """A single-colour sheet for sketches."""
    return np.full((height, width, 3), background.paper, dtype=np.uint8)


def flat(background: Background, width: int, height: int) -> np.ndarray:
    """A flat or two-tone (sky above ground) background for cartoons."""
    top, bottom, horizon = background.flat
    image = np.empty((height, width, 3), dtype=np.uint8)
    split = int(round(horizon * height))
    image[:split] = top
    image[split:] = bottom
    return image


def for_type(background: Background, image_type: str, width: int, height: int) -> np.ndarray:
    """The background of one image type."""
    makers = {"photo": photo_crop, "sketch": paper, "cartoon": flat}
    return makers[image_type](background, width, height)
