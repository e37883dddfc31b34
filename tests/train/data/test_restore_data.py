"""Training material of the restoration GAN: measured quality labels, crops, patches, the held-out rule."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.media.degrade import DegradeConfig
from jobs.media.images import grid_crops
from jobs.train.data.restore import (
    HELD_OUT,
    TRAIN_PHOTOS,
    QualityLabelSettings,
    SourceSettings,
    check_held_out,
    cut_patches,
    load_photo,
    meets_size,
    psnr_to_quality,
    quality_class,
    quality_examples,
)


def test_quality_number_and_class_follow_the_method_ranges():
    assert psnr_to_quality(20.0, 20, 40) == 0
    assert psnr_to_quality(30.0, 20, 40) == 50
    assert psnr_to_quality(float("inf"), 20, 40) == 100
    assert [quality_class(v) for v in (0, 29.9, 30, 59.9, 60, 100)] == [0, 0, 1, 1, 2, 2]


def test_quality_examples_label_clean_crops_good_and_heavy_degradations_lower():
    images = [load_photo("camera")]
    cfg = QualityLabelSettings(crops=120, crop=32, clean_share=0.3)
    crops, numbers, classes = quality_examples(images, cfg, DegradeConfig(), seed=0)
    assert crops.shape == (120, 32, 32, 3) and crops.dtype == np.uint8
    assert set(np.unique(classes)) == {0, 1, 2}  # every class occurs
    assert np.all(classes[numbers == 100] == 2)
    again = quality_examples(images, cfg, DegradeConfig(), seed=0)
    assert np.array_equal(again[0], crops)  # seeded


def test_grid_crops_spread_over_the_image_and_pad_small_ones():
    image = np.arange(300 * 200 * 3, dtype=np.uint32).reshape(300, 200, 3).astype(np.uint8)
    crops = grid_crops(image, 64, 6)
    assert crops.shape[1:] == (64, 64, 3) and 1 < len(crops) <= 6
    assert grid_crops(image[:40, :50], 64, 4).shape == (1, 64, 64, 3)


def test_cut_patches_on_a_grid():
    image = np.zeros((100, 70, 3), np.uint8)
    assert cut_patches(image, 32, 32).shape == (3 * 2, 32, 32, 3)


def test_sources_never_include_held_out_photos():
    assert not set(TRAIN_PHOTOS) & set(HELD_OUT)
    check_held_out(SourceSettings())
    with pytest.raises(ValueError, match="astronaut"):
        check_held_out(SourceSettings(photos=["camera", "astronaut"]))


def test_size_filter():
    assert meets_size(np.zeros((500, 500, 3)), 500)
    assert not meets_size(np.zeros((499, 900, 3)), 500)
