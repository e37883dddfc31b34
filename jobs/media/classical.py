"""Classical restoration baselines and the full-reference metrics they are scored with.

The learned generator is compared against these baselines on the same degraded inputs (RGB ``uint8``, ``(H, W, 3)``):

- ``bicubic``: for inputs that were downsampled by ``scale`` and brought back with some interpolation (bilinear,
  bicubic or nearest), shrink again with area averaging to the low resolution and re-upsample bicubically.
- ``nlm_h<h>``: OpenCV non-local-means denoising (``fastNlMeansDenoisingColored``) at strength ``h``.
- ``median<k>``: a ``k x k`` median filter, the textbook answer to salt-and-pepper noise, which NLM handles badly.
- ``unsharp_a<amount>``: unsharp masking, ``image + amount * (image - gaussian_blur(image))``.
- chains joined with ``+``, always in the order bicubic, then denoise, then sharpen.

"Best combination per image" is chosen by PSNR against the clean image. That is an oracle choice (no real
restorer can see the clean image), so it is generous to the baselines: the reported classical number is an upper
bound on what any one fixed classical pipeline would score. The degraded input itself ("identity") is not a
candidate, so the classical number is an honest baseline even when every candidate is worse than the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {a.dtype} and {b.dtype}")


def _check_rgb(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images over all channels, with data range 255.

    Args:
        a: First image, uint8.
        b: Second image, uint8, same shape as ``a``.

    Returns:
        PSNR in dB; ``float("inf")`` for identical images.

    Raises:
        ValueError: If the shapes differ or an image is not uint8.
    """
    _check_pair(a, b)
    with np.errstate(divide="ignore"):  # identical images: skimage divides by a zero error, giving inf
        return float(peak_signal_noise_ratio(a, b, data_range=255))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two RGB uint8 images (channel axis 2, data range 255).

    Returns:
        Mean SSIM; 1.0 for identical images.

    Raises:
        ValueError: If the shapes differ or an image is not uint8.
    """
    _check_pair(a, b)
    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def reinterpolate_bicubic(image: np.ndarray, scale: float) -> np.ndarray:
    """Bicubic baseline for an image downsampled by ``scale`` and upsampled back with some interpolation.

    Args:
        image: Degraded RGB uint8 image at the original size.
        scale: The degradation's downsampling factor (> 0).

    Returns:
        The image area-downsampled to ``(round(w / scale), round(h / scale))`` and bicubically upsampled back
        to exactly ``(w, h)``.
    """
    _check_rgb(image)
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    h, w = image.shape[:2]
    small_size = (max(1, round(w / scale)), max(1, round(h / scale)))
    small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def nlm_denoise(image: np.ndarray, h: float = 10.0, template: int = 7, search: int = 21) -> np.ndarray:
    """OpenCV non-local-means denoising of an RGB image.

    Args:
        image: RGB uint8 image (converted to BGR for OpenCV and back).
        h: Filter strength for luminance and colour alike.
        template: Template patch size (odd).
        search: Search window size (odd).

    Returns:
        The denoised RGB uint8 image.
    """
    _check_rgb(image)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    out = cv2.fastNlMeansDenoisingColored(bgr, None, h, h, template, search)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def median_denoise(image: np.ndarray, k: int = 3) -> np.ndarray:
    """``k x k`` median filter of an RGB uint8 image, the classical remedy for salt-and-pepper noise.

    Raises:
        ValueError: If ``k`` is not an odd integer >= 3.
    """
    _check_rgb(image)
    if k < 3 or k % 2 == 0:
        raise ValueError(f"k must be an odd integer >= 3, got {k}")
    return cv2.medianBlur(image, k)


def unsharp(image: np.ndarray, sigma: float = 1.5, amount: float = 1.0) -> np.ndarray:
    """Unsharp masking: ``image + amount * (image - GaussianBlur(image, sigma))`` in float, clipped to uint8.

    Args:
        image: RGB uint8 image.
        sigma: Standard deviation of the Gaussian blur, in pixels.
        amount: Weight of the high-pass detail added back.
    """
    _check_rgb(image)
    x = image.astype(np.float32)
    blurred = cv2.GaussianBlur(x, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    return np.clip(np.rint(x + amount * (x - blurred)), 0, 255).astype(np.uint8)


def classical_candidates(
    image: np.ndarray,
    scale: float | None,
    nlm_strengths: Sequence[float] = (5.0, 10.0, 15.0),
    unsharp_amounts: Sequence[float] = (0.5, 1.0),
) -> dict[str, np.ndarray]:
    """Every single classical baseline and chain of them applied to a degraded image.

    Args:
        image: Degraded RGB uint8 image.
        scale: The degradation's downsampling factor, or ``None`` when it did not downsample (no bicubic variants).
        nlm_strengths: NLM strengths ``h`` to try; each NLM is computed once per (input, h) and reused.
        unsharp_amounts: Unsharp-masking amounts to try (sigma 1.5).

    Returns:
        Name -> image, e.g. ``"nlm_h10"``, ``"median3"``, ``"nlm_h10+unsharp_a0.5"``,
        ``"bicubic+nlm_h10+unsharp_a1.0"`` (29 candidates with the defaults and a scale, 14 without).
    """
    _check_rgb(image)
    bases: dict[str, np.ndarray] = {"": image}
    if scale is not None:
        bases["bicubic"] = reinterpolate_bicubic(image, scale)
    out: dict[str, np.ndarray] = {}
    for base_name, base in bases.items():
        stages: dict[str, np.ndarray] = {base_name: base}
        for h in nlm_strengths:
            stages[_join(base_name, f"nlm_h{h:g}")] = nlm_denoise(base, h=h)
        stages[_join(base_name, "median3")] = median_denoise(base, 3)
        for stage_name, stage in stages.items():
            if stage_name:
                out[stage_name] = stage
            for amount in unsharp_amounts:
                out[_join(stage_name, f"unsharp_a{amount}")] = unsharp(stage, amount=amount)
    return out


def _join(prefix: str, name: str) -> str:
    return f"{prefix}+{name}" if prefix else name


def candidate_psnrs(degraded: np.ndarray, clean: np.ndarray, scale: float | None) -> dict[str, float]:
    """Candidate name -> PSNR (dB) against ``clean`` of every :func:`classical_candidates` output, in order."""
    _check_pair(degraded, clean)
    return {name: psnr(img, clean) for name, img in classical_candidates(degraded, scale).items()}


def best_classical(degraded: np.ndarray, clean: np.ndarray, scale: float | None) -> tuple[str, np.ndarray, float]:
    """The oracle-best classical candidate: highest PSNR against the clean image (the degraded input excluded).

    Args:
        degraded: Degraded RGB uint8 image.
        clean: Clean reference, same shape.
        scale: Downsampling factor of the degradation, or ``None``.

    Returns:
        ``(name, image, psnr)`` of the best candidate; ties go to the first in candidate order.
    """
    _check_pair(degraded, clean)
    candidates = classical_candidates(degraded, scale)
    scores = {name: psnr(img, clean) for name, img in candidates.items()}
    best = max(scores, key=scores.__getitem__)
    return best, candidates[best], scores[best]
