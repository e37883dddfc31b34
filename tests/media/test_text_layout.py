"""Fragments into lines, lines into reading order, rotated crops: geometry only, no OCR model."""

import numpy as np
import pytest

from jobs.media.text_layout import group_lines, line_quad, reading_order, rectified_crop


def box(x0: float, y0: float, x1: float, y1: float, angle: float = 0.0, about=(0.0, 0.0)) -> np.ndarray:
    """An axis-aligned box turned by ``angle`` degrees (clockwise on screen) about ``about``, as a (4, 2) quad."""
    quad = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
    t = np.radians(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return (quad - about) @ rot.T + about


def test_fragments_of_a_slanted_line_join_in_reading_order():
    # one line turned by 12 degrees, cut into three fragments; a second line below it; sorting fragments by their
    # top edge would read the rightmost fragment first
    line = [box(0, 0, 90, 20, 12), box(100, 0, 200, 20, 12), box(212, 0, 300, 20, 12)]
    below = box(0, 60, 120, 80, 12)
    quads = np.stack([line[2], below, line[0], line[1]])
    groups = group_lines(quads)
    assert sorted(groups, key=len) == [[1], [2, 3, 0]]
    merged = np.stack([line_quad(quads[g]) for g in groups])
    order = reading_order(merged)
    assert [groups[k] for k in order] == [[2, 3, 0], [1]]


def test_fragments_too_far_apart_or_of_other_sizes_stay_apart():
    near, far = box(0, 0, 100, 20), box(160, 0, 260, 20)  # a gap of 3 line heights
    small = box(104, 8, 140, 16)  # half the height, right after the first
    assert sorted(group_lines(np.stack([near, far]))) == [[0], [1]]
    assert sorted(group_lines(np.stack([near, small]))) == [[0], [1]]
    assert group_lines(np.stack([near, box(110, 2, 200, 22)])) == [[0, 1]]  # a word gap, a little lower
    assert group_lines(np.zeros((0, 4, 2))) == []


def test_columns_are_read_one_after_the_other_under_a_title_that_spans_them():
    title = box(0, 0, 400, 24)
    left = [box(0, 40 + 30 * k, 180, 60 + 30 * k) for k in range(3)]
    right = [box(240, 40 + 30 * k, 400, 60 + 30 * k) for k in range(3)]  # same baselines as the left column
    quads = np.stack([right[1], left[2], title, right[0], left[0], right[2], left[1]])
    order = reading_order(quads)
    names = ["r1", "l2", "title", "r0", "l0", "r2", "l1"]
    assert [names[k] for k in order] == ["title", "l0", "l1", "l2", "r0", "r1", "r2"]


def test_a_turned_page_is_read_in_its_own_frame():
    rows = [box(0, 30 * k, 300, 30 * k + 20, -15, about=(150, 45)) for k in range(4)]
    order = reading_order(np.stack(rows[::-1]))
    assert order == [3, 2, 1, 0]


def test_line_quad_covers_its_fragments_and_rectified_crop_straightens_it():
    frags = np.stack([box(10, 10, 60, 30, 8), box(70, 10, 120, 30, 8)])
    quad = line_quad(frags)
    assert np.linalg.norm(quad[1] - quad[0]) == pytest.approx(110, abs=1)
    assert np.linalg.norm(quad[3] - quad[0]) == pytest.approx(20, abs=1)
    image = np.zeros((80, 160, 3), np.uint8)
    crop = rectified_crop(image, quad)
    assert crop.shape[:2] == (20, 110)
