"""Text layout: detector fragments joined into lines, lines put in reading order, rotated line crops. Ray-free.

A text detector returns one quadrilateral per connected region of its probability map. On a slanted or spaced-out
line that is often several fragments, and sorting them by their top edge reads a tilted line in the wrong order
(``"wet\\ntfloor\\nCaution"``) or reads the overlap of two fragments twice. Here:

* :func:`group_lines`: two fragments belong to one line when their directions agree (within ``max_angle``
  degrees), their heights are alike (ratio at least ``min_height_ratio``), the centre of each lies within half a
  line height of the other's centre line, and the gap between them along the line is at most ``max_gap`` line
  heights. Lines are the connected groups of that relation.
* :func:`line_quad`: a line's quadrilateral is the rotated rectangle around its fragments' corners.
* :func:`reading_order`: lines are laid out in the page's own frame (turned by the median line angle), then cut
  recursively, XY-cut style: first at a vertical gap at least ``column_gap`` line heights wide that no line crosses
  (columns, left first), else at the topmost horizontal gap (paragraphs and lines, top first); what cannot be cut
  is read top to bottom by centre. A title that spans two columns comes first, then each column whole.

Text set vertically (taller than wide) is not handled as lines here: its fragments stay as they are.
"""

from __future__ import annotations

import cv2
import numpy as np


def _geometry(quads: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per quad ``(N, 4, 2)`` (clockwise from top-left): centre, unit direction along the text, height, length."""
    top, bottom = quads[:, 1] - quads[:, 0], quads[:, 2] - quads[:, 3]
    along = top + bottom
    length = np.linalg.norm(along, axis=1) / 2
    direction = along / np.maximum(np.linalg.norm(along, axis=1, keepdims=True), 1e-6)
    height = (np.linalg.norm(quads[:, 3] - quads[:, 0], axis=1) + np.linalg.norm(quads[:, 2] - quads[:, 1], axis=1)) / 2
    return quads.mean(axis=1), direction, np.maximum(height, 1.0), length


def group_lines(quads: np.ndarray, max_gap: float = 1.2, max_angle: float = 10.0,
                min_height_ratio: float = 0.6) -> list[list[int]]:  # fmt: skip
    """Indices of ``quads`` grouped into lines, each line's fragments in order along its direction."""
    n = len(quads)
    if n == 0:
        return []
    centre, direction, height, length = _geometry(np.asarray(quads, np.float64))
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    cos_tol = np.cos(np.radians(max_angle))
    upright = height <= 1.5 * length  # text set vertically stays as its fragments
    for i in range(n):
        for j in range(i + 1, n):
            if not (upright[i] and upright[j]) or float(direction[i] @ direction[j]) < cos_tol:
                continue
            h = max(height[i], height[j])
            if min(height[i], height[j]) < min_height_ratio * h:
                continue
            d = centre[j] - centre[i]
            u = (direction[i] + direction[j]) / 2
            u /= max(np.linalg.norm(u), 1e-6)
            across = abs(d[0] * u[1] - d[1] * u[0])
            gap = abs(float(d @ u)) - (length[i] + length[j]) / 2
            if across <= 0.5 * min(height[i], height[j]) and gap <= max_gap * h:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    out = []
    for members in groups.values():
        u = direction[members].mean(axis=0)
        out.append(sorted(members, key=lambda k: float(centre[k] @ u)))
    return out


def line_quad(quads: np.ndarray) -> np.ndarray:
    """The rotated rectangle around the corners of one line's fragments ``(K, 4, 2)``, as a ``(4, 2)`` quad
    clockwise from the top-left corner of the text (reading direction left to right)."""
    if len(quads) == 1:
        return np.asarray(quads[0], np.float32)
    _, direction, _, _ = _geometry(np.asarray(quads, np.float64))
    u = direction.mean(axis=0)
    u /= max(np.linalg.norm(u), 1e-6)
    v = np.array([-u[1], u[0]])  # across the line, pointing down in image coordinates
    points = np.asarray(quads, np.float64).reshape(-1, 2)
    a, b = points @ u, points @ v
    corners = [(a.min(), b.min()), (a.max(), b.min()), (a.max(), b.max()), (a.min(), b.max())]
    return np.array([s * u + t * v for s, t in corners], np.float32)


def rectified_crop(image: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """The pixels inside ``quad`` warped to an upright rectangle (reading direction left to right)."""
    quad = np.asarray(quad, np.float32)
    width = int(round(max(np.linalg.norm(quad[1] - quad[0]), np.linalg.norm(quad[2] - quad[3]))))
    height = int(round(max(np.linalg.norm(quad[3] - quad[0]), np.linalg.norm(quad[2] - quad[1]))))
    width, height = max(width, 1), max(height, 1)
    target = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    warp = cv2.getPerspectiveTransform(quad, target)
    return cv2.warpPerspective(image, warp, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def _first_gap(lo: np.ndarray, hi: np.ndarray, min_width: float, widest: bool) -> float | None:
    """A position inside a gap of at least ``min_width`` that no interval ``[lo, hi]`` covers: the widest such gap
    or the first (lowest) one; ``None`` when there is none."""
    order = np.argsort(lo)
    reach, best = hi[order[0]], None
    for k in order[1:]:
        gap = lo[k] - reach
        if gap >= min_width and (best is None or (widest and gap > best[0])):
            best = (gap, (lo[k] + reach) / 2)
            if not widest:
                break
        reach = max(reach, hi[k])
    return None if best is None else best[1]


def _xy_cut(idx: list[int], boxes: np.ndarray, column_gap: float) -> list[int]:
    if len(idx) <= 1:
        return idx
    b = boxes[idx]
    line_height = float(np.median(b[:, 3] - b[:, 1]))
    x = _first_gap(b[:, 0], b[:, 2], column_gap * line_height, widest=True)
    if x is not None:
        left = [i for i in idx if boxes[i, 2] <= x]
        return _xy_cut(left, boxes, column_gap) + _xy_cut([i for i in idx if boxes[i, 2] > x], boxes, column_gap)
    y = _first_gap(b[:, 1], b[:, 3], 0.0, widest=False)
    if y is not None:
        top = [i for i in idx if boxes[i, 3] <= y]
        return _xy_cut(top, boxes, column_gap) + _xy_cut([i for i in idx if boxes[i, 3] > y], boxes, column_gap)
    return sorted(idx, key=lambda i: ((boxes[i, 1] + boxes[i, 3]) / 2, boxes[i, 0]))


def reading_order(quads: np.ndarray, column_gap: float = 1.5) -> list[int]:
    """Indices of line ``quads`` ``(N, 4, 2)`` in reading order (see the module's description)."""
    quads = np.asarray(quads, np.float64)
    if len(quads) <= 1:
        return list(range(len(quads)))
    _, direction, _, length = _geometry(quads)
    angle = np.arctan2(direction[:, 1], direction[:, 0])
    theta = float(np.median(np.repeat(angle, np.maximum(1, np.round(length / length.max() * 10)).astype(int))))
    u, v = np.array([np.cos(theta), np.sin(theta)]), np.array([-np.sin(theta), np.cos(theta)])
    a, b = quads @ u, quads @ v  # (N, 4): every corner in the page's frame
    boxes = np.stack([a.min(1), b.min(1), a.max(1), b.max(1)], axis=1)
    return _xy_cut(list(range(len(quads))), boxes, column_gap)
