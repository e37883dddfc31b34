"""Image quality statistics: cheap, model-free measures that say how usable a frame is.

- sharpness: variance of the Laplacian of the grey image (higher is sharper);
- brightness / contrast: mean and standard deviation of luma, in [0, 1];
- colorfulness: Hasler and Suesstrunk (2003), on the opponent channels rg and yb;
- blockiness: mean absolute step across the 8-pixel JPEG block grid over the mean step elsewhere (1 = no
  blocking, higher = visible blocks). Measured at full resolution on a central crop, since resizing moves the grid;
- noise: Immerkaer (1996) fast estimate of the noise standard deviation, in grey levels.
"""

from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np
import pyarrow as pa

from jobs.common.config import QualityConfig
from jobs.media.images import fit_within
from jobs.score.stages.base import Stage

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def grey(image: np.ndarray) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` -> luma float32 ``(H, W)`` in grey levels."""
    return image.astype(np.float32) @ _LUMA


def sharpness(luma: np.ndarray) -> float:
    return float(cv2.Laplacian(luma, cv2.CV_32F).var())


def colorfulness(image: np.ndarray) -> float:
    rgb = image.astype(np.float32)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def blockiness(luma: np.ndarray, block: int = 8, crop: int = 512) -> float:
    h, w = luma.shape
    if h < 2 * block or w < 2 * block:
        return float("nan")
    top, left = max(0, (h - crop) // 2) // block * block, max(0, (w - crop) // 2) // block * block
    patch = luma[top : top + crop, left : left + crop]
    ratios = []
    for steps in (np.abs(np.diff(patch, axis=1)), np.abs(np.diff(patch, axis=0)).T):
        on_grid = np.zeros(steps.shape[1], bool)
        on_grid[block - 1 :: block] = True  # the step between pixel 8k-1 and 8k crosses a block edge
        ratios.append((steps[:, on_grid].mean() + 1e-3) / (steps[:, ~on_grid].mean() + 1e-3))
    return float(np.mean(ratios))


def noise_sigma(luma: np.ndarray) -> float:
    h, w = luma.shape
    if h < 3 or w < 3:
        return float("nan")
    response = np.abs(cv2.filter2D(luma, cv2.CV_32F, _IMMERKAER)[1:-1, 1:-1])
    return float(np.sqrt(np.pi / 2) * response.sum() / (6.0 * (w - 2) * (h - 2)))


def quality_stats(image: np.ndarray, max_side: int = 512) -> dict[str, float]:
    """All statistics of one RGB uint8 image."""
    small = fit_within(image, max_side)[0]
    luma = grey(small)
    return {
        "quality_sharpness": sharpness(luma),
        "quality_brightness": float(luma.mean() / 255.0),
        "quality_contrast": float(luma.std() / 255.0),
        "quality_colorfulness": colorfulness(small),
        "quality_blockiness": blockiness(grey(image)),
        "quality_noise": noise_sigma(luma),
    }


class QualityStage(Stage):
    """Adds the ``quality_*`` columns."""

    name: ClassVar[str] = "quality"
    columns: ClassVar[dict[str, pa.DataType]] = {
        name: pa.float32()
        for name in (
            "quality_sharpness", "quality_brightness", "quality_contrast",
            "quality_colorfulness", "quality_blockiness", "quality_noise",
        )
    }  # fmt: skip

    cfg: QualityConfig

    def process(self, images: list[np.ndarray]) -> dict[str, list]:
        stats = [quality_stats(image, self.cfg.max_side) for image in images]
        return {name: [s[name] for s in stats] for name in self.columns}
