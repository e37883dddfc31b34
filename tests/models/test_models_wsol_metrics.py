"""MaxBoxAcc, MaxBoxAccV2 and PxAP on CAMs with known answers, and the fast tau sweep against a brute-force one."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from models.cam import box_iou, cam_to_boxes
from models.wsol_metrics import box_acc_curve, max_box_acc, max_box_acc_v2, pxap


def rect_mask(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def smooth_cam(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """A CAM-like map: a small random map, blurred, bilinearly upsampled, min-max normalized."""
    small = cv2.GaussianBlur(rng.random((cells, cells)), (3, 3), 0)
    cam = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return (cam - cam.min()) / (cam.max() - cam.min())


def random_boxes(rng: np.random.Generator, h: int, w: int, n: int) -> list[tuple[int, int, int, int]]:
    out = []
    for _ in range(n):
        x0, x1 = sorted(int(v) for v in rng.choice(w + 1, 2, replace=False))
        y0, y1 = sorted(int(v) for v in rng.choice(h + 1, 2, replace=False))
        out.append((x0, y0, x1, y1))
    return out


def brute_force_curve(cams, gts, deltas, tau_step, multi):
    """BoxAcc by labelling every tau of every image."""
    taus = np.arange(0, 1, tau_step)
    hits = np.zeros((len(deltas), len(taus)))
    for cam, boxes in zip(cams, gts, strict=True):
        for j, tau in enumerate(taus):
            pred = cam_to_boxes(np.asarray(cam, np.float64), tau, mode="all" if multi else "largest")
            best = max((box_iou(p, g) for p in pred for g in boxes), default=0.0)
            hits[:, j] += [best >= d for d in deltas]
    return 100 * hits / len(cams)


@pytest.fixture(scope="module")
def perfect():
    rng = np.random.default_rng(0)
    gts = [[(4, 6, 20, 18)], [(0, 0, 10, 30)], [(3, 3, 9, 9), (15, 14, 30, 28)], [(8, 2, 31, 12)]]
    masks = [rect_mask((32, 32), boxes) for boxes in gts]
    return [m.astype(np.float32) for m in masks], gts, masks, rng


def test_cam_equal_to_the_mask_scores_100(perfect):
    cams, gts, masks, _ = perfect
    scores = max_box_acc(cams, gts)
    assert scores[0.5][0] == 100.0 and scores[0.7][0] == 100.0
    for _, tau in scores.values():
        assert 0.0 <= tau < 1.0
    assert scores[0.5][1] == pytest.approx(0.001)  # tau 0 keeps the whole image; the first tau above 0 is exact
    assert max_box_acc_v2(cams, gts) == 100.0
    assert pxap(cams, masks) == pytest.approx(100.0)


def test_uniform_noise_scores_low():
    rng = np.random.default_rng(1)
    cams = [rng.random((32, 32)) for _ in range(20)]
    gts = [[(10, 10, 20, 20)] for _ in cams]
    masks = [rect_mask((32, 32), boxes) for boxes in gts]
    scores = max_box_acc(cams, gts, tau_step=0.01)
    assert scores[0.5][0] <= 20 and scores[0.7][0] <= 10
    assert 0.0 <= scores[0.5][1] < 1.0
    assert pxap(cams, masks) < 20  # about the share of positive pixels, 100 / 1024 * 100


def test_box_with_iou_between_05_and_07():
    gt = (10, 10, 30, 30)
    shifted = (15, 10, 35, 30)
    assert 0.5 < box_iou(gt, shifted) < 0.7
    cams = [rect_mask((48, 48), [shifted]).astype(np.float64)]
    scores = max_box_acc(cams, [[gt]])
    assert scores[0.5][0] == 100.0
    assert scores[0.7][0] == 0.0


def test_multi_contour_scores_the_best_component():
    cam = np.zeros((40, 40))
    cam[0:20, 0:40] = 0.6  # a large wrong blob
    cam[28:36, 28:36] = 1.0  # the object, smaller
    gts = [[(28, 28, 36, 36)]]
    assert max_box_acc([cam], gts, (0.5,))[0.5][0] == 100.0  # at tau above 0.6 only the object is left
    low = np.minimum(cam, 0.6)  # object and blob equally strong: the largest component is the blob
    assert max_box_acc([low], gts, (0.5,))[0.5][0] == 0.0
    assert max_box_acc([low], gts, (0.5,), multi_contour=True)[0.5][0] == 100.0


def test_v2_is_the_mean_over_three_deltas_with_multi_contour():
    rng = np.random.default_rng(2)
    cams = [smooth_cam(rng, (32, 32), 5) for _ in range(12)]
    gts = [random_boxes(rng, 32, 32, 1 + i % 2) for i in range(12)]
    multi = max_box_acc(cams, gts, (0.3, 0.5, 0.7), tau_step=0.01, multi_contour=True)
    assert max_box_acc_v2(cams, gts, tau_step=0.01) == pytest.approx(np.mean([v[0] for v in multi.values()]))


@pytest.mark.parametrize("multi", [False, True])
def test_sweep_matches_brute_force(multi):
    rng = np.random.default_rng(3)
    cams = [smooth_cam(rng, (24, 28), 4) for _ in range(6)]
    cams += [rng.random((12, 16)) for _ in range(3)]  # many local maxima
    cams += [np.round(smooth_cam(rng, (20, 20), 3) * 8) / 8 for _ in range(3)]  # plateaus
    cams += [np.zeros((10, 10)), np.ones((10, 10))]
    gts = [random_boxes(rng, *c.shape, 1 + i % 2) for i, c in enumerate(cams)]
    deltas = (0.3, 0.5, 0.7)
    for step in (0.02, 0.007):
        _, fast = box_acc_curve(cams, gts, deltas, step, multi)
        np.testing.assert_array_equal(fast, brute_force_curve(cams, gts, deltas, step, multi))


def test_sweep_is_fast_on_realistic_cams():
    rng = np.random.default_rng(4)
    cams = [smooth_cam(rng, (128, 128), 16).astype(np.float32) for _ in range(50)]
    gts = [random_boxes(rng, 128, 128, 1) for _ in cams]
    started = time.perf_counter()
    max_box_acc(cams, gts)
    max_box_acc_v2(cams, gts)
    print(f"50 CAMs of 128x128, 1000 taus, MaxBoxAcc + V2: {time.perf_counter() - started:.2f} s")


def test_pxap_by_hand():
    cam = np.array([[0.9, 0.8, 0.3, 0.1]])
    mask = np.array([[1, 0, 1, 0]])
    # thresholds from high to low: (P 1, R 1/2), (P 1/2, R 1/2), (P 2/3, R 1), (P 1/2, R 1)
    assert pxap([cam], [mask]) == pytest.approx(100 * (0.5 * 1 + 0.5 * 2 / 3))


def test_input_errors():
    with pytest.raises(ValueError, match="GT"):
        max_box_acc([np.zeros((4, 4))], [])
    with pytest.raises(ValueError, match="positive"):
        pxap([np.zeros((4, 4))], [np.zeros((4, 4))])
    with pytest.raises(ValueError, match="shape"):
        pxap([np.zeros((4, 4))], [np.ones((4, 5))])
    with pytest.raises(ValueError, match="H, W"):
        max_box_acc([np.zeros((2, 4, 4))], [[(0, 0, 1, 1)]])
