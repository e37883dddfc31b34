"""Synthetic degradation of clean RGB images into (degraded, clean) training pairs, after CN115131218A.

From the patent (held by the config validators): "at least one of" blur -> downsample -> upsample -> noise -> JPEG,
in that order; Gaussian blur with odd kernels 3..13; motion blur of integer length 0..12 (<= 1 is no blur) at 0..90
degrees, its PSF a normalized line through the kernel centre; upsampling back by bilinear, bicubic or nearest;
Gaussian, Poisson or salt-and-pepper noise; JPEG quality 50..100.

Our choices, where the patent is silent: the per-op probabilities and motion-blur share (so both mild and heavy
pairs occur); Gaussian sigma = kernel * U(0.15, 0.3) (a larger kernel really blurs more); the downsampling factor
U(1.5, 4) with area interpolation (alias-free, like sensor binning); noise magnitudes that are visible without
destroying content; Poisson noise as photon counts with a random peak at white; salt-and-pepper on whole pixels.
Every draw comes from one seeded generator and is recorded as JSON-able steps; noise steps carry their own seed,
so :func:`apply_params` replays a pair exactly.
"""

from __future__ import annotations

from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from jobs.common.config import StrictModel

OPS = ("blur", "downsample", "noise", "jpeg")

Resize = Literal["area", "bilinear", "bicubic", "nearest"]
UpMethod = Literal["bilinear", "bicubic", "nearest"]
NoiseKind = Literal["gaussian", "poisson", "salt_pepper"]

_INTERP = dict(area=cv2.INTER_AREA, bilinear=cv2.INTER_LINEAR, bicubic=cv2.INTER_CUBIC, nearest=cv2.INTER_NEAREST)
_BORDER = cv2.BORDER_REFLECT_101
_INF = float("inf")
_BOUNDS: dict[str, tuple[float, float]] = {
    "gaussian_sigma": (0.01, _INF),
    "motion_length": (0, 12),
    "motion_angle": (0.0, 90.0),
    "down_scale": (1.0, _INF),
    "gaussian_noise_sigma": (0.0, _INF),
    "gaussian_noise_mean": (-_INF, _INF),
    "poisson_peak": (1.0, _INF),
    "salt_pepper_amount": (0.0, 1.0),
    "jpeg_quality": (50, 100),
}


def _check_range(name: str, lo: float, hi: float, low: float, high: float) -> None:
    if not low <= lo <= hi <= high:
        raise ValueError(f"{name} must satisfy {low} <= lo <= hi <= {high}, got ({lo}, {hi})")


class DegradeConfig(StrictModel):
    """Which degradations are drawn, in which order, and from which ranges.

    ``ops`` is the order of application, each op at most once. Each listed op is drawn with chance ``p[op]``; when
    none is drawn, one listed op is picked uniformly (the patent's "at least one"). Ranges are ``(lo, hi)``, drawn
    uniformly (integers inclusive); the patent's ranges bound the blur, motion and JPEG fields.
    """

    ops: list[Literal["blur", "downsample", "noise", "jpeg"]] = Field(list(OPS), min_length=1)
    p: dict[str, float] = {"blur": 0.7, "downsample": 0.5, "noise": 0.6, "jpeg": 0.7}
    motion_p: float = Field(0.3, ge=0, le=1)
    gaussian_kernels: list[int] = Field([3, 5, 7, 9, 11, 13], min_length=1)
    gaussian_sigma: tuple[float, float] = (0.15, 0.3)
    motion_length: tuple[int, int] = (0, 12)
    motion_angle: tuple[float, float] = (0.0, 90.0)
    down_scale: tuple[float, float] = (1.5, 4.0)
    down_method: Resize = "area"
    up_methods: list[UpMethod] = Field(["bilinear", "bicubic", "nearest"], min_length=1)
    noise_kinds: list[NoiseKind] = Field(["gaussian", "poisson", "salt_pepper"], min_length=1)
    gaussian_noise_sigma: tuple[float, float] = (2.0, 20.0)
    gaussian_noise_mean: tuple[float, float] = (-2.0, 2.0)
    poisson_peak: tuple[float, float] = (30.0, 255.0)
    salt_pepper_amount: tuple[float, float] = (0.001, 0.02)
    jpeg_quality: tuple[int, int] = (50, 100)

    @field_validator("gaussian_kernels")
    @classmethod
    def _odd_kernels(cls, kernels: list[int]) -> list[int]:
        if any(k % 2 == 0 or not 3 <= k <= 13 for k in kernels):
            raise ValueError(f"gaussian kernels must be odd and within 3..13, got {kernels}")
        return kernels

    @field_validator(*_BOUNDS)
    @classmethod
    def _ranges(cls, value: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        _check_range(str(info.field_name), *value, *_BOUNDS[str(info.field_name)])
        return value

    @model_validator(mode="after")
    def _check_ops(self) -> DegradeConfig:
        if len(set(self.ops)) != len(self.ops):
            raise ValueError(f"ops must not repeat, got {self.ops}")
        if set(self.p) - set(OPS) or set(self.ops) - set(self.p):
            raise ValueError(f"p needs keys from {OPS} covering every op in {self.ops}, got {sorted(self.p)}")
        for op, chance in self.p.items():
            _check_range(f"p[{op!r}]", chance, chance, 0.0, 1.0)
        return self


def gaussian_blur(image: np.ndarray, kernel: int, sigma: float) -> np.ndarray:
    """Blurs with a ``kernel`` x ``kernel`` Gaussian of std ``sigma`` (reflected borders)."""
    return cv2.GaussianBlur(image, (kernel, kernel), sigma, borderType=_BORDER)


def motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    """The motion-blur PSF: an anti-aliased line of ``length`` pixels through the centre, summing to 1.

    Args:
        length: Line length in pixels; ``<= 1`` gives the 1x1 identity kernel.
        angle_deg: Direction from the x axis, counter-clockwise (image rows grow downwards).

    Returns:
        A float32 square kernel of odd size ``max(length, 1)`` rounded up to odd.
    """
    if length <= 1:
        return np.ones((1, 1), np.float32)
    half = length // 2
    dy, dx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    theta = np.deg2rad(angle_deg)
    along = dx * np.cos(theta) - dy * np.sin(theta)
    across = np.abs(dx * np.sin(theta) + dy * np.cos(theta))
    weight = np.clip(1.0 - across, 0.0, 1.0) * np.clip(length / 2 + 0.5 - np.abs(along), 0.0, 1.0)
    return (weight / weight.sum()).astype(np.float32)


def motion_blur(image: np.ndarray, length: int, angle_deg: float) -> np.ndarray:
    """Blurs with :func:`motion_kernel` (reflected borders)."""
    return cv2.filter2D(image, -1, motion_kernel(length, angle_deg), borderType=_BORDER)


def down_up(image: np.ndarray, scale: float, up_method: str, down_method: str = "area") -> np.ndarray:
    """Downsamples by ``scale`` with ``down_method``, then resizes back to the exact input size with ``up_method``."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w / scale)), max(1, round(h / scale))), interpolation=_INTERP[down_method])
    return cv2.resize(small, (w, h), interpolation=_INTERP[up_method])


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def gaussian_noise(image: np.ndarray, rng: np.random.Generator, mean: float, sigma: float) -> np.ndarray:
    """Adds i.i.d. Gaussian noise of ``mean`` and ``sigma`` grey levels to every sample."""
    return _to_uint8(image.astype(np.float64) + rng.normal(mean, sigma, image.shape))


def poisson_noise(image: np.ndarray, rng: np.random.Generator, peak: float) -> np.ndarray:
    """Shot noise: each sample becomes ``Poisson(value / 255 * peak) / peak * 255``."""
    return _to_uint8(rng.poisson(image.astype(np.float64) / 255.0 * peak) / peak * 255.0)


def salt_pepper(image: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Sets ``round(amount * H * W)`` random pixels (all channels) to black or white with equal chance."""
    h, w = image.shape[:2]
    out = image.copy()
    picks = rng.choice(h * w, size=round(amount * h * w), replace=False)
    out.reshape(h * w, -1)[picks] = (rng.integers(0, 2, size=picks.size) * 255).astype(np.uint8)[:, None]
    return out


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Round-trips an RGB image through JPEG at ``quality``."""
    _, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _integer(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def _pick(rng: np.random.Generator, options: list[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _draw_blur(cfg: DegradeConfig, rng: np.random.Generator) -> dict:
    if rng.random() < cfg.motion_p:
        length, angle = _integer(rng, cfg.motion_length), _uniform(rng, cfg.motion_angle)
        return {"op": "blur", "kind": "motion", "length": length, "angle": angle}
    kernel = int(_pick(rng, cfg.gaussian_kernels))
    return {"op": "blur", "kind": "gaussian", "kernel": kernel, "sigma": kernel * _uniform(rng, cfg.gaussian_sigma)}


def _draw_downsample(cfg: DegradeConfig, rng: np.random.Generator) -> dict:
    scale = _uniform(rng, cfg.down_scale)
    return {"op": "downsample", "scale": scale, "up": str(_pick(rng, cfg.up_methods)), "down": cfg.down_method}


def _draw_noise(cfg: DegradeConfig, rng: np.random.Generator) -> dict:
    kind = str(_pick(rng, cfg.noise_kinds))
    if kind == "gaussian":
        step = {"mean": _uniform(rng, cfg.gaussian_noise_mean), "sigma": _uniform(rng, cfg.gaussian_noise_sigma)}
    elif kind == "poisson":
        step = {"peak": _uniform(rng, cfg.poisson_peak)}
    else:
        step = {"amount": _uniform(rng, cfg.salt_pepper_amount)}
    return {"op": "noise", "kind": kind, **step, "seed": int(rng.integers(2**32))}


def _draw_jpeg(cfg: DegradeConfig, rng: np.random.Generator) -> dict:
    return {"op": "jpeg", "quality": _integer(rng, cfg.jpeg_quality)}


_DRAW = {"blur": _draw_blur, "downsample": _draw_downsample, "noise": _draw_noise, "jpeg": _draw_jpeg}


def draw_params(cfg: DegradeConfig, rng: np.random.Generator) -> list[dict]:
    """Draws which ops run and their parameters.

    Args:
        cfg: The degradation config.
        rng: The generator every draw comes from.

    Returns:
        The steps in ``cfg.ops`` order, each a JSON-able dict with an ``"op"`` key; never empty.
    """
    chosen = [op for op in cfg.ops if rng.random() < cfg.p[op]] or [_pick(rng, cfg.ops)]
    return [_DRAW[op](cfg, rng) for op in chosen]


def _apply_blur(image: np.ndarray, step: dict) -> np.ndarray:
    if step["kind"] == "motion":
        return motion_blur(image, step["length"], step["angle"])
    return gaussian_blur(image, step["kernel"], step["sigma"])


def _apply_noise(image: np.ndarray, step: dict) -> np.ndarray:
    rng = np.random.default_rng(step["seed"])
    if step["kind"] == "gaussian":
        return gaussian_noise(image, rng, step["mean"], step["sigma"])
    if step["kind"] == "poisson":
        return poisson_noise(image, rng, step["peak"])
    return salt_pepper(image, rng, step["amount"])


_APPLY = {
    "blur": _apply_blur,
    "downsample": lambda image, step: down_up(image, step["scale"], step["up"], step["down"]),
    "noise": _apply_noise,
    "jpeg": lambda image, step: jpeg(image, step["quality"]),
}


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected an RGB uint8 image of shape (H, W, 3), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
        raise ValueError(f"expected a non-empty RGB uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}")


def apply_params(image: np.ndarray, steps: list[dict]) -> np.ndarray:
    """Replays ``steps`` (from :func:`draw_params`) on ``image``; the same steps always give the same bytes."""
    _check_image(image)
    out = np.ascontiguousarray(image)
    for step in steps:
        if step["op"] not in _APPLY:
            raise ValueError(f"unknown op {step['op']!r} in step {step}")
        out = _APPLY[step["op"]](out, step)
    return out


def degrade(
    image: np.ndarray, cfg: DegradeConfig, seed: int | list[int] | np.random.Generator
) -> tuple[np.ndarray, list[dict]]:
    """Degrades an RGB uint8 image with steps drawn from ``cfg``.

    Args:
        image: The clean image, uint8 of shape (H, W, 3).
        cfg: The degradation config.
        seed: An int seed, a list of ints (a seed sequence) or a generator; the same seed gives byte-identical
            output and params.

    Returns:
        The degraded image (same shape, uint8) and the steps applied, for :func:`apply_params`.

    Raises:
        ValueError: If ``image`` is not a non-empty uint8 (H, W, 3) array.
    """
    _check_image(image)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    steps = draw_params(cfg, rng)
    return apply_params(image, steps), steps


def downsample_scale(steps: list[dict]) -> float | None:
    """The scale of the downsample step in ``steps``, or None when there is none."""
    return next((float(step["scale"]) for step in steps if step["op"] == "downsample"), None)
