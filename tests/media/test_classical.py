import math

import cv2
import numpy as np
import pytest

from jobs.media.classical import (
    best_classical,
    candidate_psnrs,
    classical_candidates,
    median_denoise,
    nlm_denoise,
    psnr,
    reinterpolate_bicubic,
    ssim,
    unsharp,
)


def synth(h: int = 96, w: int = 128) -> np.ndarray:
    """A smooth RGB gradient with a few flat shapes and a line drawn on it."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([40 + 150 * x / w, 60 + 120 * y / h, 120 + 60 * np.sin(x / 17 + y / 23)], axis=2)
    img = np.ascontiguousarray(img.astype(np.uint8))
    cv2.rectangle(img, (w // 12, h // 8), (w * 2 // 5, h * 2 // 5), (220, 30, 40), -1)
    cv2.circle(img, (w * 7 // 10, h * 5 // 8), min(h, w) // 5, (20, 200, 90), -1)
    cv2.line(img, (5, h - 10), (w - 8, h - 25), (250, 250, 250), 2)
    return img


def gaussian_noise(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def salt_and_pepper(img: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = img.copy()
    u = rng.random(img.shape[:2])
    out[u < fraction / 2] = 0
    out[u > 1 - fraction / 2] = 255
    return out


def test_psnr_identical_is_inf():
    img = synth()
    assert psnr(img, img.copy()) == float("inf")


def test_psnr_known_offset():
    a = np.full((20, 30, 3), 100, np.uint8)
    b = a + 10
    assert psnr(a, b) == pytest.approx(20 * math.log10(255 / 10), abs=1e-6)


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_metrics_reject_shape_mismatch(metric):
    with pytest.raises(ValueError, match="shape"):
        metric(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 11, 3), np.uint8))


def test_ssim_identical_is_one_and_falls_with_noise():
    img = synth()
    assert ssim(img, img.copy()) == pytest.approx(1.0)
    light, heavy = gaussian_noise(img, 5, seed=0), gaussian_noise(img, 25, seed=0)
    assert 1.0 > ssim(img, light) > ssim(img, heavy)


def test_nlm_raises_psnr_on_gaussian_noise():
    clean = synth()
    noisy = gaussian_noise(clean, 15, seed=1)
    assert psnr(nlm_denoise(noisy), clean) >= psnr(noisy, clean) + 3.0


def test_nlm_handles_rgb_order():
    # A flat pure-red image must stay red (a BGR/RGB mix-up would swap channels 0 and 2).
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = 200
    out = nlm_denoise(img)
    assert out[..., 0].mean() > 190 and out[..., 2].mean() < 10


def test_median_removes_salt_and_pepper():
    clean = synth()
    noisy = salt_and_pepper(clean, 0.1, seed=2)
    assert psnr(median_denoise(noisy, 3), clean) >= psnr(noisy, clean) + 5.0


def test_median_rejects_even_aperture():
    with pytest.raises(ValueError):
        median_denoise(synth(), 4)


def test_unsharp_restores_a_blurred_edge():
    sharp = np.full((64, 64, 3), 40, np.uint8)
    sharp[:, 32:] = 200
    blurred = cv2.GaussianBlur(sharp, (0, 0), 1.5)
    out = unsharp(blurred, sigma=1.5, amount=1.0)
    assert out.dtype == np.uint8 and out.shape == sharp.shape

    def max_step(img: np.ndarray) -> int:
        return int(np.abs(np.diff(img.astype(np.int32), axis=1)).max())

    assert max_step(out) > max_step(blurred)
    assert psnr(out, sharp) > psnr(blurred, sharp)


def test_unsharp_amount_zero_is_identity():
    img = synth()
    np.testing.assert_array_equal(unsharp(img, amount=0.0), img)


@pytest.mark.parametrize(("h", "w"), [(96, 128), (47, 61)])
def test_reinterpolate_bicubic_shape_and_beats_nearest(h, w):
    clean = synth(h, w)
    small = cv2.resize(clean, (round(w / 3), round(h / 3)), interpolation=cv2.INTER_AREA)
    nearest = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    out = reinterpolate_bicubic(nearest, 3)
    assert out.shape == clean.shape and out.dtype == np.uint8
    assert psnr(out, clean) > psnr(nearest, clean)


def test_candidates_bicubic_only_with_scale():
    noisy = gaussian_noise(synth(48, 64), 10, seed=3)
    without = classical_candidates(noisy, None)
    with_scale = classical_candidates(noisy, 2.0)
    assert not any("bicubic" in name for name in without)
    assert {"bicubic", "bicubic+nlm_h10", "bicubic+nlm_h10+unsharp_a1.0", "bicubic+median3"} <= set(with_scale)
    assert {"nlm_h10", "median3", "unsharp_a1.0", "nlm_h10+unsharp_a0.5", "median3+unsharp_a0.5"} <= set(without)
    assert set(without) < set(with_scale) and len(with_scale) <= 30
    assert "identity" not in with_scale
    assert all(img.shape == noisy.shape and img.dtype == np.uint8 for img in with_scale.values())


@pytest.mark.parametrize("scale", [None, 2.0])
def test_best_classical_is_argmax(scale):
    clean = synth()
    degraded = gaussian_noise(clean, 12, seed=4)
    name, image, value = best_classical(degraded, clean, scale)
    scores = {n: psnr(img, clean) for n, img in classical_candidates(degraded, scale).items()}
    assert name == max(scores, key=scores.__getitem__)
    assert value == pytest.approx(max(scores.values()))
    assert value == pytest.approx(psnr(image, clean))
    assert candidate_psnrs(degraded, clean, scale) == pytest.approx(scores)
