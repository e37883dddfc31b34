"""Training material of the restoration GAN: source photos, the sample-image filter and training patches. Ray-free.

Sources are the real photos that ship inside scikit-image (named; a named subset is held out for evaluation and
never reaches training) and, optionally, the cartoon and sketch images of a corpus manifest: most training photos
are grey, and the corpus's flat colours and coloured edges teach the generator colour.

The method's filter (claims 7-11) keeps an initial image only when it meets a preset size (500x500 by default)
and the quality classifier puts it in the "good" class; its "has a background" test is not defined in the method
and is left out (every photo here has one).

Where the quality classifier's labels come from: the method trains it on manually annotated classes with quality
numbers 0-100 (poor below 30, medium below 60). We have no annotators, so a label is measured instead: a crop of a
source photo is degraded with a random draw of the training degradations (or left as it is), and its quality
number is its PSNR against the clean crop mapped linearly from ``db_low`` (0) to ``db_high`` (100). The crop's
class is the method's range that number falls in.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from jobs.common.config import StrictModel
from jobs.media.degrade import DegradeConfig, degrade

HELD_OUT: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket")
"""scikit-image photos kept out of training: the evaluation's images."""

TRAIN_PHOTOS: tuple[str, ...] = (
    "brick",
    "camera",
    "cell",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "retina",
    "stereo_motorcycle",
    "coins",
    "horse",
)
"""Candidate training photos (the size filter drops the small ones: coins, horse)."""


class SourceSettings(StrictModel):
    """Where training images come from and which of them are kept."""

    photos: list[str] = list(TRAIN_PHOTOS)
    held_out: list[str] = list(HELD_OUT)
    corpus_manifest: str | None = Field(None, description="also the images of this corpus manifest")
    corpus_limit: int = Field(200, ge=0, description="at most this many corpus images (largest first)")
    corpus_image_types: list[str] = Field(
        ["cartoon", "sketch"],
        description="corpus image types used; the corpus's photos are crops of the scikit-image photos, held-out "
        "ones included, so they stay out by default",
    )
    min_size: int = Field(500, ge=1, description="the method's preset size: width and height at least this")
    quality_filter: bool = Field(True, description="keep only images the quality classifier calls good")


class QualityLabelSettings(StrictModel):
    """How the quality classifier's training crops are made and labelled, and how it trains."""

    crops: int = Field(3000, ge=30)
    crop: int = Field(64, ge=16)
    clean_share: float = Field(0.25, ge=0, le=1, description="crops left undegraded (quality 100)")
    db_low: float = Field(20.0, description="PSNR mapped to quality 0")
    db_high: float = Field(40.0, description="PSNR mapped to quality 100")
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    judge_patches: int = Field(16, ge=1, description="crops per image when judging a whole image")


def load_photo(name: str) -> np.ndarray:
    """A scikit-image sample photo as RGB uint8 ``(H, W, 3)``."""
    from jobs.media.images import photo

    return photo(name)


def check_held_out(settings: SourceSettings) -> None:
    """Refuse a config that would train on an evaluation photo."""
    leak = sorted(set(settings.photos) & set(settings.held_out))
    if leak:
        raise ValueError(f"photos {leak} are held out for evaluation and cannot be training sources")


def meets_size(image: np.ndarray, min_size: int) -> bool:
    return image.shape[0] >= min_size and image.shape[1] >= min_size


def psnr_to_quality(db: float, db_low: float, db_high: float) -> float:
    """The measured label: PSNR in dB -> quality 0-100 (an undegraded crop, infinite PSNR, is 100)."""
    return float(np.clip((db - db_low) / (db_high - db_low) * 100.0, 0.0, 100.0))


def quality_class(number: float) -> int:
    """Index into ``models.quality_net.CLASSES`` of a quality number (poor < 30 <= medium < 60 <= good)."""
    return 0 if number < 30 else 1 if number < 60 else 2


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return image[y : y + size, x : x + size]


def quality_examples(
    images: list[np.ndarray], cfg: QualityLabelSettings, degrade_cfg: DegradeConfig, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops ``(N, S, S, 3)`` uint8, their quality numbers ``(N,)`` and classes ``(N,)``."""
    from jobs.media.classical import psnr

    rng = np.random.default_rng(seed)
    usable = [im for im in images if min(im.shape[:2]) >= cfg.crop]
    if not usable:
        raise ValueError(f"no source image is at least {cfg.crop} px on its shorter side")
    crops, numbers = [], []
    for _ in range(cfg.crops):
        clean = random_crop(usable[int(rng.integers(len(usable)))], cfg.crop, rng)
        if rng.random() < cfg.clean_share:
            crops.append(clean)
            numbers.append(100.0)
            continue
        degraded, _ = degrade(clean, degrade_cfg, rng)
        crops.append(degraded)
        numbers.append(psnr_to_quality(psnr(degraded, clean), cfg.db_low, cfg.db_high))
    values = np.asarray(numbers, np.float32)
    return np.stack(crops), values, np.asarray([quality_class(v) for v in values], np.int64)


def cut_patches(image: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Every ``size`` patch on a ``stride`` grid ``(n, S, S, 3)``."""
    h, w = image.shape[:2]
    return np.stack([image[y : y + size, x : x + size] for y in range(0, h - size + 1, stride)
                     for x in range(0, w - size + 1, stride)])  # fmt: skip
