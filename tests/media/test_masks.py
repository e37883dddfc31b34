"""Mask encodings of /v1/localize."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.media.masks import encode_mask, mask_to_rle, png_to_mask, rle_to_mask


def test_rle_is_coco_column_major_starting_with_zeros():
    mask = np.array([[0, 1], [0, 1], [1, 1]], dtype=bool)  # columns: 0,0,1 then 1,1,1
    assert mask_to_rle(mask) == {"size": [3, 2], "counts": [2, 4]}
    starts_with_one = np.ones((2, 2), dtype=bool)
    assert mask_to_rle(starts_with_one)["counts"] == [0, 4]
    assert mask_to_rle(np.zeros((2, 3), dtype=bool))["counts"] == [6]


@pytest.mark.parametrize("seed", range(5))
def test_rle_and_png_round_trip(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) > rng.random()
    assert np.array_equal(rle_to_mask(mask_to_rle(mask)), mask)
    assert np.array_equal(png_to_mask(encode_mask(mask, "png")), mask)
    assert sum(mask_to_rle(mask)["counts"]) == mask.size
    assert np.array_equal(rle_to_mask(encode_mask(mask, "coco")), mask)


@pytest.mark.parametrize("seed", range(5))
def test_uncompressed_rle_reads_in_pycocotools_as_the_same_mask(seed):
    from pycocotools import mask as coco_mask

    rng = np.random.default_rng(seed)
    mask = rng.random((int(rng.integers(1, 60)), int(rng.integers(1, 60)))) > rng.random()
    rle = mask_to_rle(mask)
    compressed = coco_mask.frPyObjects(rle, *rle["size"])
    assert np.array_equal(coco_mask.decode(compressed).astype(bool), mask)
    assert int(coco_mask.area(compressed)) == int(mask.sum())
    assert compressed["counts"].decode() == encode_mask(mask, "coco")["counts"]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="unknown mask format"):
        encode_mask(np.zeros((2, 2), bool), "gif")
    with pytest.raises(ValueError, match="cover"):
        rle_to_mask({"size": [2, 2], "counts": [1, 2]})
    assert encode_mask(np.zeros((2, 2), bool), "none") is None
