"""CAM post-processing on hand-made maps with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.cam import box_iou, box_iou_matrix, cam_to_boxes, cam_to_mask, mask_to_boxes, normalize_cam, upsample_cam


def test_normalize_cam_per_image_and_constant_maps():
    cam = torch.stack([torch.arange(12.0).view(3, 4) - 5, torch.full((3, 4), 7.0), torch.zeros(3, 4)])
    out = normalize_cam(cam)
    assert out.shape == cam.shape
    assert out[0].min() == 0 and out[0].max() == 1
    torch.testing.assert_close(out[0], (cam[0] + 5) / 11)
    assert torch.all(out[1] == 0) and torch.all(out[2] == 0)
    assert torch.isfinite(out).all()


def test_upsample_cam_shape_and_values():
    cam = torch.rand(2, 4, 4)
    up = upsample_cam(cam, (32, 24))
    assert up.shape == (2, 32, 24)
    assert torch.all(upsample_cam(torch.full((1, 3, 3), 0.25), (9, 9)) == 0.25)
    assert up.min() >= cam.min() - 1e-6 and up.max() <= cam.max() + 1e-6  # bilinear does not overshoot


def test_cam_to_mask_is_inclusive():
    cam = np.array([[0.0, 0.5], [0.49, 1.0]])
    assert cam_to_mask(cam, 0.5).tolist() == [[False, True], [False, True]]


def test_single_rectangle_gives_its_exact_box():
    mask = np.zeros((20, 30), bool)
    mask[5:12, 3:9] = True
    assert mask_to_boxes(mask) == [(3, 5, 9, 12)]
    assert mask_to_boxes(mask, mode="all") == [(3, 5, 9, 12)]
    one = np.zeros((4, 4), np.uint8)
    one[2, 3] = 1
    assert mask_to_boxes(one) == [(3, 2, 4, 3)]


def test_two_blobs_largest_and_all_with_area_filter():
    mask = np.zeros((40, 40), bool)
    mask[2:6, 2:6] = True  # 16 pixels
    mask[20:35, 10:30] = True  # 300 pixels
    assert mask_to_boxes(mask, "largest") == [(10, 20, 30, 35)]
    assert mask_to_boxes(mask, "all") == [(10, 20, 30, 35), (2, 2, 6, 6)]
    assert mask_to_boxes(mask, "all", min_area_frac=16 / 1600) == [(10, 20, 30, 35), (2, 2, 6, 6)]
    assert mask_to_boxes(mask, "all", min_area_frac=17 / 1600) == [(10, 20, 30, 35)]
    assert mask_to_boxes(mask, "largest", min_area_frac=0.5) == []


def test_diagonal_pixels_are_one_component():
    mask = np.eye(5, dtype=bool)
    assert mask_to_boxes(mask, "all") == [(0, 0, 5, 5)]


def test_equal_areas_pick_the_top_most_then_left_most():
    mask = np.zeros((10, 10), bool)
    mask[6:8, 0:2] = True
    mask[1:3, 7:9] = True
    mask[1:3, 3:5] = True
    assert mask_to_boxes(mask) == [(3, 1, 5, 3)]


def test_empty_mask_gives_no_box():
    assert mask_to_boxes(np.zeros((8, 8), bool)) == []
    assert mask_to_boxes(np.zeros((8, 8), bool), "all") == []
    assert cam_to_boxes(np.full((8, 8), 0.3), 0.5) == []


def test_cam_to_boxes_on_a_blob():
    cam = np.zeros((32, 32))
    cam[10:20, 4:12] = 0.8
    cam[12:14, 6:8] = 1.0
    assert cam_to_boxes(cam, 0.5) == [(4, 10, 12, 20)]
    assert cam_to_boxes(cam, 0.9) == [(6, 12, 8, 14)]
    assert cam_to_boxes(cam, 0.0) == [(0, 0, 32, 32)]


def test_mask_to_boxes_rejects_bad_input():
    with pytest.raises(ValueError, match="mode"):
        mask_to_boxes(np.ones((3, 3)), mode="biggest")
    with pytest.raises(ValueError, match="H, W"):
        mask_to_boxes(np.ones((2, 3, 3)))


def test_box_iou_with_exclusive_ends():
    assert box_iou((0, 0, 4, 4), (0, 0, 4, 4)) == 1.0
    assert box_iou((0, 0, 4, 4), (2, 0, 6, 4)) == pytest.approx(8 / 24)
    assert box_iou((0, 0, 2, 2), (2, 0, 4, 2)) == 0.0  # touching, not overlapping
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    assert box_iou((1, 1, 3, 3), (0, 0, 4, 4)) == pytest.approx(4 / 16)
    a = np.array([[0, 0, 4, 4], [1, 1, 3, 3]])
    b = np.array([[2, 0, 6, 4], [0, 0, 4, 4], [10, 10, 11, 11]])
    expected = [[box_iou(x, y) for y in b] for x in a]
    np.testing.assert_allclose(box_iou_matrix(a, b), expected)
