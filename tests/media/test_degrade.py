import json

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from jobs.media.degrade import (
    OPS,
    DegradeConfig,
    apply_params,
    degrade,
    down_up,
    downsample_scale,
    draw_params,
    gaussian_blur,
    gaussian_noise,
    jpeg,
    motion_blur,
    motion_kernel,
    poisson_noise,
    salt_pepper,
)

ALWAYS = {op: 1.0 for op in OPS}
NEVER = {op: 0.0 for op in OPS}


def textured(h: int = 48, w: int = 64) -> np.ndarray:
    """Sinusoids of several frequencies per channel plus a seeded random pattern."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    noise = np.random.default_rng(0).integers(0, 60, size=(h, w, 3))
    channels = [np.sin(x / 2.0 + c) * np.cos(y / 3.0 - c) * 80 for c in range(3)]
    return np.clip(np.stack(channels, axis=-1) + 128 + noise - 30, 0, 255).astype(np.uint8)


def gradient(h: int = 64, w: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rgb = np.stack([40 + 150 * x / w, 200 - 120 * y / h, 90 + 60 * (x + y) / (w + h)], axis=-1)
    return np.rint(rgb).astype(np.uint8)


def laplacian_var(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def check_step(step: dict, cfg: DegradeConfig) -> None:
    assert all(type(v) in (int, float, str) for v in step.values()), step
    if step["op"] == "blur" and step["kind"] == "gaussian":
        k = step["kernel"]
        assert k % 2 == 1 and 3 <= k <= 13 and k in cfg.gaussian_kernels
        assert cfg.gaussian_sigma[0] * k <= step["sigma"] <= cfg.gaussian_sigma[1] * k
    elif step["op"] == "blur":
        assert step["kind"] == "motion" and 0 <= step["length"] <= 12 and 0.0 <= step["angle"] <= 90.0
    elif step["op"] == "downsample":
        assert cfg.down_scale[0] <= step["scale"] <= cfg.down_scale[1]
        assert step["up"] in cfg.up_methods and step["down"] == cfg.down_method
    elif step["op"] == "noise":
        assert step["kind"] in cfg.noise_kinds and isinstance(step["seed"], int)
        if step["kind"] == "gaussian":
            assert cfg.gaussian_noise_sigma[0] <= step["sigma"] <= cfg.gaussian_noise_sigma[1]
            assert cfg.gaussian_noise_mean[0] <= step["mean"] <= cfg.gaussian_noise_mean[1]
        elif step["kind"] == "poisson":
            assert cfg.poisson_peak[0] <= step["peak"] <= cfg.poisson_peak[1]
        else:
            assert cfg.salt_pepper_amount[0] <= step["amount"] <= cfg.salt_pepper_amount[1]
    else:
        assert step["op"] == "jpeg" and 50 <= step["quality"] <= 100


def test_drawn_parameters_stay_in_range_over_many_seeds():
    cfg = DegradeConfig(p=ALWAYS, motion_p=0.5)
    seen = set()
    for seed in range(200):
        steps = draw_params(cfg, np.random.default_rng(seed))
        assert [s["op"] for s in steps] == list(OPS)
        json.dumps(steps)
        for step in steps:
            check_step(step, cfg)
            seen.add((step["op"], step.get("kind"), step.get("up")))
    kinds = {(op, kind) for op, kind, _ in seen}
    assert {("blur", "gaussian"), ("blur", "motion")} <= kinds
    assert {("noise", k) for k in ("gaussian", "poisson", "salt_pepper")} <= kinds
    assert {up for op, _, up in seen if op == "downsample"} == {"bilinear", "bicubic", "nearest"}


def test_narrowed_ranges_are_respected():
    cfg = DegradeConfig(
        p=ALWAYS,
        gaussian_kernels=[5],
        motion_length=(3, 4),
        jpeg_quality=(90, 92),
        down_scale=(2.0, 2.5),
        up_methods=["nearest"],
    )
    for seed in range(100):
        for step in draw_params(cfg, np.random.default_rng(seed)):
            check_step(step, cfg)
            assert step.get("kernel", 5) == 5 and 3 <= step.get("length", 3) <= 4
            assert 90 <= step.get("quality", 90) <= 92


def test_at_least_one_op_even_when_every_probability_is_zero():
    cfg = DegradeConfig(p=NEVER)
    picked = set()
    for seed in range(60):
        steps = draw_params(cfg, np.random.default_rng(seed))
        assert len(steps) == 1
        picked.add(steps[0]["op"])
    assert picked == set(OPS)


def test_default_config_never_draws_an_empty_list():
    for seed in range(200):
        assert draw_params(DegradeConfig(), np.random.default_rng(seed))


def test_subset_and_order_follow_the_config():
    cfg = DegradeConfig(ops=["jpeg", "blur"], p={"jpeg": 1.0, "blur": 1.0})
    steps = draw_params(cfg, np.random.default_rng(3))
    assert [s["op"] for s in steps] == ["jpeg", "blur"]


def test_same_seed_is_identical_and_different_seeds_differ():
    image, cfg = textured(), DegradeConfig(p=ALWAYS)
    a, pa = degrade(image, cfg, 7)
    b, pb = degrade(image, cfg, 7)
    assert a.tobytes() == b.tobytes() and pa == pb
    c, pc = degrade(image, cfg, 8)
    assert pc != pa and c.tobytes() != a.tobytes()
    d, pd = degrade(image, cfg, np.random.default_rng(7))
    assert d.tobytes() == a.tobytes() and pd == pa


@pytest.mark.parametrize("shape", [(37, 53, 3), (5, 7, 3), (1, 1, 3)])
def test_output_keeps_shape_and_dtype(shape):
    image = textured(*shape[:2])
    for seed in range(20):
        out, _ = degrade(image, DegradeConfig(p=ALWAYS, down_scale=(3.0, 4.0)), seed)
        assert out.shape == shape and out.dtype == np.uint8


def test_apply_params_replays_degrade_exactly():
    image = textured()
    for seed in range(30):
        out, steps = degrade(image, DegradeConfig(motion_p=0.5), seed)
        replay = apply_params(image, json.loads(json.dumps(steps)))
        assert replay.tobytes() == out.tobytes()


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3))])
def test_rejects_non_rgb_uint8(bad):
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        degrade(bad, DegradeConfig(), 0)


def test_downsample_scale():
    assert downsample_scale([{"op": "jpeg", "quality": 60}, {"op": "downsample", "scale": 2.5}]) == 2.5
    assert downsample_scale([{"op": "jpeg", "quality": 60}]) is None


@pytest.mark.parametrize("length", [2, 5, 9, 12])
@pytest.mark.parametrize("angle", [0.0, 33.0, 45.0, 90.0])
def test_motion_kernel_is_normalized_odd_and_symmetric(length, angle):
    kernel = motion_kernel(length, angle)
    assert kernel.dtype == np.float32 and kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
    assert kernel.shape[0] >= length and kernel.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-6)


@pytest.mark.parametrize("length", [0, 1])
def test_motion_kernel_identity_for_short_lengths(length):
    kernel = motion_kernel(length, 30.0)
    assert kernel.shape == (1, 1) and kernel[0, 0] == 1.0
    image = textured()
    assert np.array_equal(motion_blur(image, length, 30.0), image)


def test_motion_kernel_direction():
    horizontal, vertical = motion_kernel(9, 0.0), motion_kernel(9, 90.0)
    c = horizontal.shape[0] // 2
    assert horizontal[c].sum() == pytest.approx(1.0, abs=1e-5) and np.count_nonzero(horizontal[c]) == 9
    assert vertical[:, c].sum() == pytest.approx(1.0, abs=1e-5) and np.count_nonzero(vertical[:, c]) == 9
    diagonal = motion_kernel(9, 45.0)
    assert diagonal[c - 2, c + 2] > 0 and diagonal[c + 2, c + 2] == 0


def test_motion_blur_smears_only_along_its_direction():
    image = np.zeros((31, 31, 3), np.uint8)
    image[15, 15] = 255
    out = motion_blur(image, 9, 0.0)
    assert np.count_nonzero(out[15, :, 0]) == 9 and np.count_nonzero(out[:, 15, 0]) == 1


def test_gaussian_blur_lowers_laplacian_variance():
    image = textured()
    small, large = gaussian_blur(image, 3, 0.6), gaussian_blur(image, 13, 3.0)
    assert laplacian_var(large) < laplacian_var(small) < laplacian_var(image)


def test_down_up_keeps_size_and_loses_detail():
    image = textured(37, 53)
    for method in ("bilinear", "bicubic", "nearest"):
        out = down_up(image, 3.0, method)
        assert out.shape == image.shape and laplacian_var(out) < laplacian_var(image)
    blocks = np.kron(textured(8, 10), np.ones((2, 2, 1), np.uint8))
    assert np.array_equal(down_up(blocks, 2.0, "nearest", "nearest"), blocks)


def test_jpeg_quality_50_changes_pixels_but_keeps_colours():
    image = gradient()
    out = jpeg(image, 50)
    assert out.shape == image.shape and not np.array_equal(out, image)
    means_in, means_out = image.reshape(-1, 3).mean(0), out.reshape(-1, 3).mean(0)
    np.testing.assert_allclose(means_out, means_in, atol=3.0)
    assert np.abs(out.astype(int) - image).mean() < 4.0


def test_salt_pepper_sets_about_amount_of_pixels():
    image = np.full((100, 120, 3), 128, np.uint8)
    out = salt_pepper(image, np.random.default_rng(1), 0.05)
    changed = np.any(out != image, axis=-1)
    assert changed.sum() == round(0.05 * 100 * 120)
    values = out[changed]
    assert np.all((values == 0).all(-1) | (values == 255).all(-1))
    assert 0.35 < (values[:, 0] == 255).mean() < 0.65


def test_gaussian_and_poisson_noise_statistics():
    image = np.full((200, 200, 3), 128, np.uint8)
    noisy = gaussian_noise(image, np.random.default_rng(0), 2.0, 10.0).astype(np.float64)
    assert noisy.mean() - 128 == pytest.approx(2.0, abs=0.3) and noisy.std() == pytest.approx(10.0, rel=0.05)
    peak = 50.0
    shot = poisson_noise(image, np.random.default_rng(0), peak).astype(np.float64)
    expected_std = np.sqrt(128 / 255 * peak) / peak * 255
    assert shot.mean() == pytest.approx(128, abs=1.0) and shot.std() == pytest.approx(expected_std, rel=0.05)
    assert poisson_noise(image, np.random.default_rng(0), 1e6).std() < 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gaussian_kernels": [3, 4]},
        {"gaussian_kernels": [15]},
        {"gaussian_kernels": [1]},
        {"motion_length": (0, 13)},
        {"motion_angle": (0.0, 120.0)},
        {"jpeg_quality": (40, 90)},
        {"jpeg_quality": (90, 80)},
        {"down_scale": (3.0, 2.0)},
        {"gaussian_noise_sigma": (5.0, 1.0)},
        {"ops": ["blur", "sharpen"]},
        {"ops": ["blur", "blur"]},
        {"ops": []},
        {"p": {**ALWAYS, "sharpen": 0.5}},
        {"p": {**ALWAYS, "blur": 1.5}},
        {"ops": ["blur", "jpeg"], "p": {"blur": 0.5}},
        {"salt_pepper_amount": (0.0, 1.5)},
        {"unknown_field": 1},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValidationError):
        DegradeConfig(**kwargs)
