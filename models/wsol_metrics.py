"""WSOL metrics of Choe et al. (CVPR 2020, "Evaluating Weakly Supervised Object Localization Methods Right").

* ``BoxAcc(tau, delta)``: percentage of images whose predicted box, from the CAM binarized at ``cam >= tau``, has
  IoU ``>= delta`` with any of the image's ground-truth boxes. The predicted box is the bounding box of the largest
  8-connected component (ties: top-most, then left-most), or with ``multi_contour`` the best of all components.
  An empty mask predicts nothing (a miss).
* ``MaxBoxAcc(delta) = max_tau BoxAcc(tau, delta)``, ``tau`` swept over ``np.arange(0, 1, tau_step)``;
  ``MaxBoxAccV2`` is its mean over ``delta`` in 0.3, 0.5, 0.7 with ``multi_contour``.
* ``PxAP``: average precision of the CAM values as pixel scores against binary ground-truth masks.

Components are found with OpenCV's labelling (pixel areas, where the reference code used contour areas). The
sweep is exact but labels only the taus where a hit can change (see ``_TauSweep``), so a smooth CAM costs a few
dozen labellings instead of one per tau.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from models.cam import box_iou_matrix

V2_IOU_THRESHOLDS = (0.3, 0.5, 0.7)


@dataclass
class _Level:
    """The 8-connected components of ``cam >= tau``; component ``k`` has label ``k + 1``."""

    labels: np.ndarray  # (H * W,) int32, 0 is the background
    seeds: np.ndarray  # (K,) flat index of one pixel of each component
    boxes: np.ndarray  # (K, 4) exclusive ends
    areas: np.ndarray  # (K,)
    iou: np.ndarray  # (K,) IoU with the best-matching GT box


def _pairwise_inter(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas of boxes ``(N, 4)`` and ``(M, 4)``: ``(N, M)``."""
    ix = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    iy = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.maximum(ix, 0) * np.maximum(iy, 0)


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou_bounds(inner: np.ndarray, outer: np.ndarray, gts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds ``(K,)`` on the best IoU with ``gts`` of any box ``B`` with ``inner <= B <= outer`` (inclusion)."""
    inter_in, inter_out = _pairwise_inter(inner, gts), _pairwise_inter(outer, gts)  # (K, G)
    union_in = _area(inner)[:, None] + _area(gts)[None, :] - inter_in
    union_out = _area(outer)[:, None] + _area(gts)[None, :] - inter_out
    lo = np.divide(inter_in, union_out, out=np.zeros_like(inter_in), where=union_out > 0)
    hi = np.divide(inter_out, union_in, out=np.ones_like(inter_out), where=union_in > 0)
    return lo.max(axis=1), hi.max(axis=1)


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components: flat labels ``(H * W,)``, boxes ``(K, 4)``, areas ``(K,)``; label ``k + 1`` is ``k``."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    stats = stats[1:].astype(np.int64)  # (K, 5): x, y, width, height, area; row 0 is the background
    boxes = np.stack([stats[:, 0], stats[:, 1], stats[:, 0] + stats[:, 2], stats[:, 1] + stats[:, 3]], axis=1)
    return labels.ravel(), boxes, stats[:, 4]


class _TauSweep:
    """Exact BoxAcc hits of one image at every tau, labelling only the taus where a hit can change.

    Masks shrink as tau grows. Take two labelled taus ``a < b`` and any tau in between. Each of its components
    either holds a component ``B`` of ``b`` (its box then lies between box(B) and the box of the component of ``a``
    around B, its area between those areas), or is born in between: it then holds a local maximum of the CAM with a
    value in ``[tau_{a+1}, tau_b)`` and lies inside the component of the band ``tau_{a+1} <= cam < tau_b`` around
    that maximum. These boxes bound the IoU of every component that can be the prediction; where the bounds settle
    every delta, the taus in between are filled without labelling, elsewhere the interval is split in two.
    """

    def __init__(self, cam: np.ndarray, gts: np.ndarray, taus: np.ndarray, deltas: np.ndarray, multi: bool):
        self.cam, self.gts, self.taus, self.deltas, self.multi = cam, gts, taus, deltas, multi
        flat = cam.ravel()
        peaks = np.flatnonzero(flat >= cv2.dilate(cam, np.ones((3, 3), np.uint8)).ravel())  # non-strict local maxima
        order = np.argsort(flat[peaks], kind="stable")
        self.peak_index, self.peak_value = peaks[order], flat[peaks][order]
        self.levels: dict[int, _Level] = {}

    def run(self) -> np.ndarray:
        """Hits ``(len(deltas), len(taus))``."""
        n = len(self.taus)
        hits = np.zeros((len(self.deltas), n), dtype=bool)
        for i in {0, n - 1}:
            hits[:, i] = self._hit(self._level(i))
        stack = [(0, n - 1)]
        while stack:  # depth first, left half first: intervals finish from left to right
            a, b = stack.pop()
            known = self._between(a, b) if b - a > 1 else hits[:, a]
            if known is not None:
                hits[:, a + 1 : b] = known[:, None]
                self.levels.pop(a, None)  # every interval still to come lies right of a
                continue
            m = (a + b) // 2
            hits[:, m] = self._hit(self._level(m))
            stack += [(m, b), (a, m)]
        return hits

    def _level(self, i: int) -> _Level:
        if i not in self.levels:
            labels, boxes, areas = _components(self.cam >= self.taus[i])
            iou = box_iou_matrix(boxes, self.gts).max(axis=1) if len(boxes) else np.zeros(0)
            pixels = np.flatnonzero(labels)
            seeds = np.zeros(len(boxes), dtype=np.int64)
            seeds[labels[pixels] - 1] = pixels
            self.levels[i] = _Level(labels, seeds, boxes, areas, iou)
        return self.levels[i]

    def _hit(self, level: _Level) -> np.ndarray:
        if len(level.areas) == 0:
            return np.zeros(len(self.deltas), dtype=bool)
        if self.multi:
            return level.iou.max() >= self.deltas
        first = np.lexsort((level.boxes[:, 0], level.boxes[:, 1], -level.areas))[0]  # largest, top-most, left-most
        return level.iou[first] >= self.deltas

    def _between(self, a: int, b: int) -> np.ndarray | None:
        """Hits shared by every tau strictly between ``a`` and ``b``, or None if the bounds do not settle them."""
        outer, inner = self._level(a), self._level(b)
        owner = outer.labels[inner.seeds].astype(np.int64) - 1  # the component of a around each component of b
        born_boxes, born_areas = self._births(a, b)
        if len(owner) == 0 and len(born_areas) == 0:  # every mask in between is empty
            return np.zeros(len(self.deltas), dtype=bool)
        low_boxes = np.concatenate([inner.boxes, np.zeros_like(born_boxes)])  # born: no lower bound
        lo, hi = _iou_bounds(low_boxes, np.concatenate([outer.boxes[owner], born_boxes]), self.gts)
        sure_hit, sure_miss = lo[:, None] >= self.deltas, hi[:, None] < self.deltas  # (K, D): b's, then births
        if self.multi or len(owner) == 0:  # births may not happen: never a sure hit
            hit, miss = sure_hit[: len(owner)].any(axis=0), sure_miss.all(axis=0)
        else:  # every component that can be the largest somewhere in between must agree
            max_area = np.concatenate([outer.areas[owner], born_areas])
            leads = max_area >= inner.areas.max()
            hit, miss = sure_hit[leads].all(axis=0), sure_miss[leads].all(axis=0)
        return hit if np.all(hit | miss) else None

    def _births(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes ``(N, 4)`` and areas ``(N,)`` that hold any component born strictly between ``a`` and ``b``."""
        lo, hi = np.searchsorted(self.peak_value, [self.taus[a + 1], self.taus[b]], side="left")
        if hi == lo:
            return np.zeros((0, 4), np.int64), np.zeros(0, np.int64)
        labels, boxes, areas = _components((self.cam >= self.taus[a + 1]) & (self.cam < self.taus[b]))
        around = np.unique(labels[self.peak_index[lo:hi]]) - 1  # the peaks lie in the band: labels > 0
        return boxes[around], areas[around]


def _hits_per_tau(cam: np.ndarray, gts: np.ndarray, taus: np.ndarray, deltas: np.ndarray, multi: bool) -> np.ndarray:
    """Whether the image counts as localized, per delta and tau: ``(len(deltas), len(taus))``."""
    cam = np.asarray(cam, dtype=np.float64)
    if cam.ndim != 2:
        raise ValueError(f"expected an (H, W) CAM, got shape {cam.shape}")
    if not np.isfinite(cam).all():
        raise ValueError("the CAM has NaN or infinite values")
    if len(gts) == 0:
        return np.zeros((len(deltas), len(taus)), dtype=bool)
    return _TauSweep(cam, gts, taus, deltas, multi).run()


def box_acc_curve(
    cams: Sequence[np.ndarray],
    gt_boxes: Sequence[Sequence[Sequence[float]]],
    iou_thresholds: Sequence[float] = (0.5, 0.7),
    tau_step: float = 0.001,
    multi_contour: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``BoxAcc`` for every tau: the taus ``(T,)`` and percentages ``(len(iou_thresholds), T)``."""
    if len(cams) != len(gt_boxes):
        raise ValueError(f"{len(cams)} CAMs but {len(gt_boxes)} sets of GT boxes")
    if not 0 < tau_step < 1:
        raise ValueError(f"tau_step must be in (0, 1), got {tau_step}")
    taus = np.arange(0.0, 1.0, tau_step)
    deltas = np.asarray(iou_thresholds, dtype=np.float64)
    hits = np.zeros((len(deltas), len(taus)))
    for cam, gts in zip(cams, gt_boxes, strict=True):
        hits += _hits_per_tau(cam, np.asarray(gts, dtype=np.float64).reshape(-1, 4), taus, deltas, multi_contour)
    return taus, 100.0 * hits / max(len(cams), 1)


def max_box_acc(
    cams: Sequence[np.ndarray],
    gt_boxes: Sequence[Sequence[Sequence[float]]],
    iou_thresholds: Sequence[float] = (0.5, 0.7),
    tau_step: float = 0.001,
    multi_contour: bool = False,
) -> dict[float, tuple[float, float]]:
    """MaxBoxAcc per IoU threshold.

    Args:
        cams: per image an ``(H, W)`` CAM in ``[0, 1]`` at the image's resolution.
        gt_boxes: per image its GT boxes ``(x0, y0, x1, y1)`` with exclusive ends.
        iou_thresholds: the deltas.
        tau_step: step of the tau sweep over ``[0, 1)``.
        multi_contour: score the best box over all components instead of the largest component's.

    Returns:
        ``{delta: (max over tau of BoxAcc in percent, the smallest tau reaching it)}``.
    """
    taus, acc = box_acc_curve(cams, gt_boxes, iou_thresholds, tau_step, multi_contour)
    best = acc.argmax(axis=1)
    return {float(d): (float(acc[i, best[i]]), float(taus[best[i]])) for i, d in enumerate(iou_thresholds)}


def max_box_acc_v2(
    cams: Sequence[np.ndarray], gt_boxes: Sequence[Sequence[Sequence[float]]], tau_step: float = 0.001
) -> float:
    """MaxBoxAccV2: mean MaxBoxAcc over IoU 0.3, 0.5 and 0.7, with the best box over all components."""
    scores = max_box_acc(cams, gt_boxes, V2_IOU_THRESHOLDS, tau_step, multi_contour=True)
    return float(np.mean([acc for acc, _ in scores.values()]))


def pxap(cams: Sequence[np.ndarray], masks: Sequence[np.ndarray], bins: int = 1000) -> float:
    """Pixel average precision (percent) of CAM values in ``[0, 1]`` against binary masks, over all pixels.

    Pixel scores go into ``bins`` equal bins (values outside ``[0, 1]`` into the end bins); the threshold at each
    bin's lower edge, from high to low, gives one precision-recall point and ``AP = sum (R_k - R_{k-1}) * P_k``.

    Raises:
        ValueError: mismatched lengths or shapes, or no positive pixel at all.
    """
    if len(cams) != len(masks):
        raise ValueError(f"{len(cams)} CAMs but {len(masks)} masks")
    pos, neg = np.zeros(bins, np.int64), np.zeros(bins, np.int64)
    for cam, mask in zip(cams, masks, strict=True):
        cam, mask = np.asarray(cam, dtype=np.float64), np.asarray(mask) != 0
        if cam.shape != mask.shape:
            raise ValueError(f"CAM shape {cam.shape} differs from mask shape {mask.shape}")
        idx = np.clip((cam * bins).astype(np.int64), 0, bins - 1)
        pos += np.bincount(idx[mask], minlength=bins)
        neg += np.bincount(idx[~mask], minlength=bins)
    if pos.sum() == 0:
        raise ValueError("PxAP needs at least one positive pixel")
    tp = np.cumsum(pos[::-1])  # predicted positive at thresholds from the top bin down
    fp = np.cumsum(neg[::-1])
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / tp[-1]
    return float(100.0 * np.sum(np.diff(recall, prepend=0.0) * precision))
