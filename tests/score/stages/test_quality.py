import io

import cv2
import numpy as np
import pytest
from PIL import Image

from jobs.common.config import QualityConfig
from jobs.score.stages.quality import QualityStage, quality_stats


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def test_blur_lowers_sharpness(photo):
    blurred = cv2.GaussianBlur(photo, (9, 9), 3)
    assert quality_stats(blurred)["quality_sharpness"] < 0.2 * quality_stats(photo)["quality_sharpness"]


def test_strong_jpeg_raises_blockiness(photo):
    png_like = quality_stats(photo)["quality_blockiness"]
    assert quality_stats(_jpeg(photo, 8))["quality_blockiness"] > png_like + 0.3
    assert abs(png_like - 1.0) < 0.15


def test_noise_estimate_tracks_added_noise():
    rng = np.random.default_rng(0)
    flat = np.full((256, 256, 3), 128, np.uint8)
    noisy = np.clip(128 + rng.normal(0, 10, (256, 256, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)  # grey noise
    assert quality_stats(flat)["quality_noise"] < 0.5
    assert 7 < quality_stats(noisy)["quality_noise"] < 13


def test_brightness_contrast_colorfulness_extremes():
    white = np.full((64, 64, 3), 255, np.uint8)
    stats = quality_stats(white)
    assert stats["quality_brightness"] == pytest.approx(1.0, abs=1e-3)
    assert stats["quality_contrast"] == pytest.approx(0.0, abs=1e-3)
    assert stats["quality_colorfulness"] == pytest.approx(0.0, abs=1e-3)
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    assert quality_stats(red)["quality_colorfulness"] > 50


def test_stage_fills_columns_and_skips_rows_without_pixels(photo):
    stage = QualityStage(QualityConfig())
    pixels = np.empty(3, dtype=object)
    pixels[:] = [photo, np.zeros((0, 0, 3), np.uint8), photo[:100, :100]]
    batch = {
        "source_uri": np.array(["a", "b", "c"]),
        "error": np.array(["", "image_truncated: x", ""]),
        "error_code": np.array(["", "image_truncated", ""]),
        "pixels": pixels,
    }
    out = stage(batch)
    assert set(QualityStage.columns) <= set(out)
    sharp = out["quality_sharpness"]
    assert sharp[0] > 0 and np.isnan(sharp[1]) and sharp[2] > 0
    assert list(out["error"]) == ["", "image_truncated: x", ""]


def test_a_row_that_breaks_the_stage_gets_an_error_and_the_rest_go_on(photo):
    stage = QualityStage(QualityConfig())
    pixels = np.empty(2, dtype=object)
    pixels[:] = [photo, np.zeros((5, 5), np.uint8)]  # a 2-D array: the colour statistics fail on it
    batch = {"source_uri": np.array(["a", "b"]), "error": np.array(["", ""]), "error_code": np.array(["", ""])}
    out = stage({**batch, "pixels": pixels})
    assert out["quality_sharpness"][0] > 0
    assert out["error"][0] == "" and out["error"][1].startswith("stage_error: quality:")
    assert out["error_code"][1] == "stage_error"
