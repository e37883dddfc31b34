"""Silhouettes of the object classes and the distractor, as integer polygons.

Each shape is a unit polygon (its farthest vertex at distance 1 from the centre), scaled by the radius of the
circle around it and rotated, so an object of radius ``r`` at ``(cx, cy)`` always lies inside that circle.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from jobs.corpus.spec import CLASSES, DISTRACTOR

Box = tuple[int, int, int, int]
"""(x0, y0, x1, y1) in pixels, x1 and y1 exclusive."""

BAR_ASPECT = 4.0
"""Length over width of the distractor bar."""
BAR_STRIPES = 7


def _normalized(points: np.ndarray) -> np.ndarray:
    points = points - (points.max(axis=0) + points.min(axis=0)) / 2
    return points / np.linalg.norm(points, axis=1).max()


def _regular(n: int, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _star() -> np.ndarray:
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    return _regular(10) * radii[:, None]


def _cross() -> np.ndarray:
    a, t = 1.0, 1.0 / 3.0
    return np.array(
        [(t, a), (-t, a), (-t, t), (-a, t), (-a, -t), (-t, -t), (-t, -a), (t, -a), (t, -t), (a, -t), (a, t), (t, t)]
    )


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, -y], axis=1)  # image y points down


def _bar() -> np.ndarray:
    half = np.array([1.0, 1.0 / BAR_ASPECT])
    return np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)]) * half


@functools.cache
def unit_polygon(cls: str) -> np.ndarray:
    """The (N, 2) unit polygon of a class or of the distractor."""
    makers = {
        "disc": lambda: _regular(64),
        "square": lambda: _regular(4, np.pi / 4),
        "triangle": lambda: _regular(3),
        "star": _star,
        "cross": _cross,
        "heart": _heart,
        DISTRACTOR: _bar,
    }
    if cls not in makers:
        raise ValueError(f"unknown shape {cls!r}; known: {(*CLASSES, DISTRACTOR)}")
    return _normalized(makers[cls]().astype(np.float64))


def rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def polygon(cls: str, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """The (N, 2) int32 polygon of a shape in image pixels."""
    points = unit_polygon(cls) @ rotation(angle).T * radius + np.array([cx, cy])
    return np.round(points).astype(np.int32)


def box_of(poly: np.ndarray) -> Box:
    """The tight box around a polygon's filled pixels."""
    x0, y0 = poly.min(axis=0)
    x1, y1 = poly.max(axis=0)
    return int(x0), int(y0), int(x1) + 1, int(y1) + 1


def fill(canvas: np.ndarray, poly: np.ndarray, value: int | tuple, origin: tuple[int, int] = (0, 0)) -> None:
    """Fill a polygon into ``canvas`` in place; ``origin`` is the canvas's top-left corner in image pixels."""
    cv2.fillPoly(canvas, [poly - np.array(origin, dtype=np.int32)], value, lineType=cv2.LINE_8)


def outline(canvas: np.ndarray, poly: np.ndarray, colour: tuple, thickness: int, origin: tuple[int, int] = (0, 0)):
    """Draw a polygon's closed outline into ``canvas`` in place."""
    shifted = poly - np.array(origin, dtype=np.int32)
    cv2.polylines(canvas, [shifted], True, colour, thickness, lineType=cv2.LINE_8)


def bar_axis(cx: float, cy: float, radius: float, angle: float) -> tuple[np.ndarray, float, float]:
    """Direction, half length and half width of the distractor bar in pixels."""
    half = unit_polygon(DISTRACTOR).max(axis=0) * radius
    return rotation(angle)[:, 0], float(half[0]), float(half[1])


def stripe_index(xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """For pixel coordinates, the index of the bar stripe they fall in (0 .. BAR_STRIPES-1, clipped)."""
    axis, half_len, _ = bar_axis(cx, cy, radius, angle)
    u = (xs - cx) * axis[0] + (ys - cy) * axis[1] + half_len
    return np.clip((u / (2 * half_len) * BAR_STRIPES).astype(np.int64), 0, BAR_STRIPES - 1)


def stripe_lines(cx: float, cy: float, radius: float, angle: float) -> list[np.ndarray]:
    """The segments between the bar's stripes, each a (2, 2) int32 array, for line drawings."""
    axis, half_len, half_wid = bar_axis(cx, cy, radius, angle)
    normal = np.array([-axis[1], axis[0]])
    centre = np.array([cx, cy])
    lines = []
    for k in range(1, BAR_STRIPES):
        mid = centre + axis * (-half_len + 2 * half_len * k / BAR_STRIPES)
        ends = np.stack([mid - normal * half_wid, mid + normal * half_wid])
        lines.append(np.round(ends).astype(np.int32))
    return lines
