"""CAM post-processing: normalization, upsampling, binarization and boxes from connected components.

Boxes are ``(x0, y0, x1, y1)`` in pixels with exclusive ``x1`` / ``y1`` (a one-pixel box is ``(x, y, x + 1, y + 1)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Box = tuple[int, int, int, int]
BOX_MODES = ("largest", "all")


def normalize_cam(cam: Tensor) -> Tensor:
    """Min-max normalize each map of ``(B, h, w)`` to ``[0, 1]``; a constant map gives zeros."""
    if cam.ndim != 3:
        raise ValueError(f"expected (B, h, w), got shape {tuple(cam.shape)}")
    flat = cam.flatten(1)  # (B, h*w)
    lo = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - lo
    out = (flat - lo) / span.clamp_min(torch.finfo(flat.dtype).tiny)
    return torch.where(span > 0, out, torch.zeros_like(out)).view_as(cam)


def upsample_cam(cam: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear (``align_corners=False``) resize of ``(B, h, w)`` to ``(B, H, W)``."""
    if cam.ndim != 3:
        raise ValueError(f"expected (B, h, w), got shape {tuple(cam.shape)}")
    return F.interpolate(cam[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]  # (B, H, W)


def cam_to_mask(cam01: np.ndarray, tau: float) -> np.ndarray:
    """Binarize an ``(H, W)`` map: ``cam >= tau``."""
    return np.asarray(cam01) >= tau


def component_boxes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a binary mask: boxes ``(K, 4)`` (exclusive ends) and areas ``(K,)``.

    Components are ordered largest first; equal areas by top edge, then left edge.
    """
    mask_u8 = np.ascontiguousarray(mask, dtype=np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask_u8, connectivity=8)
    stats = stats[1:].astype(np.int64)  # row 0 is the background
    boxes = np.stack([stats[:, 0], stats[:, 1], stats[:, 0] + stats[:, 2], stats[:, 1] + stats[:, 3]], axis=1).reshape(
        -1, 4
    )
    areas = stats[:, 4]
    order = np.lexsort((boxes[:, 0], boxes[:, 1], -areas))
    return boxes[order], areas[order]


def mask_to_boxes(mask: np.ndarray, mode: str = "largest", min_area_frac: float = 0.0) -> list[Box]:
    """Bounding boxes of the 8-connected components of an ``(H, W)`` binary mask.

    Args:
        mask: binary mask (any dtype; nonzero is foreground).
        mode: ``"largest"``: only the largest component (ties: top-most, then left-most); ``"all"``: every
            component, largest first.
        min_area_frac: drop components with fewer than ``min_area_frac * H * W`` pixels (in both modes).

    Returns:
        Boxes ``(x0, y0, x1, y1)`` with exclusive ends; ``[]`` for an empty mask.
    """
    if mode not in BOX_MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {list(BOX_MODES)}")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    boxes, areas = component_boxes(mask != 0)
    keep = areas >= min_area_frac * mask.size
    boxes = boxes[keep]
    if mode == "largest":
        boxes = boxes[:1]
    return [tuple(int(v) for v in b) for b in boxes]


def cam_to_boxes(cam01: np.ndarray, tau: float, mode: str = "largest", min_area_frac: float = 0.0) -> list[Box]:
    """Boxes of ``cam01 >= tau`` (see :func:`mask_to_boxes`)."""
    return mask_to_boxes(cam_to_mask(cam01, tau), mode=mode, min_area_frac=min_area_frac)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes with exclusive ends; 0 when the union is empty."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``(N, 4)`` and ``(M, 4)`` with exclusive ends: ``(N, M)``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy  # (N, M)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def block_box(attention: Tensor, grid: int, select: str = "max", threshold: float = 0.5, margin: float = 0.0) -> Tensor:
    """The key region of attention maps ``(B, h, w)`` as boxes ``(B, 4)`` in ``[0, 1]`` image coordinates.

    The map is divided into ``grid x grid`` blocks and each block's mean taken. ``"max"`` keeps the block with the
    highest mean; ``"threshold"`` keeps every block whose mean is at least ``threshold`` times the highest (so it
    is never empty) and returns the box around them. Each block maps back to the image region it covers (the
    feature map spans the image), grown by ``margin`` block sizes on every side and clipped to the image.
    """
    if attention.ndim != 3:
        raise ValueError(f"expected (B, h, w), got shape {tuple(attention.shape)}")
    if select not in ("max", "threshold"):
        raise ValueError(f"unknown block selection {select!r}; valid: max, threshold")
    means = F.adaptive_avg_pool2d(attention[:, None].float(), grid)[:, 0]  # (B, g, g)
    flat = means.flatten(1)  # (B, g*g)
    if select == "max":
        keep = F.one_hot(flat.argmax(dim=1), grid * grid).bool()
    else:
        keep = flat >= threshold * flat.amax(dim=1, keepdim=True)
    keep = keep.view(-1, grid, grid)
    rows, cols = keep.any(dim=2), keep.any(dim=1)  # (B, g) each
    idx = torch.arange(grid, device=attention.device)
    big = grid + 1
    y0 = torch.where(rows, idx, big).amin(dim=1).float()
    y1 = torch.where(rows, idx, -1).amax(dim=1).float() + 1
    x0 = torch.where(cols, idx, big).amin(dim=1).float()
    x1 = torch.where(cols, idx, -1).amax(dim=1).float() + 1
    boxes = torch.stack([x0 - margin, y0 - margin, x1 + margin, y1 + margin], dim=1) / grid
    return boxes.clamp(0.0, 1.0)


def crop_resize(images: Tensor, boxes01: Tensor, size: int) -> Tensor:
    """Crop ``(B, C, H, W)`` to boxes ``(B, 4)`` in ``[0, 1]`` coordinates and resize to ``size`` (bilinear)."""
    x0, y0, x1, y1 = boxes01.to(images.dtype).unbind(dim=1)
    theta = torch.zeros(len(images), 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = x1 - x0  # the output grid's [-1, 1] spans the box
    theta[:, 0, 2] = x0 + x1 - 1
    theta[:, 1, 1] = y1 - y0
    theta[:, 1, 2] = y0 + y1 - 1
    grid = F.affine_grid(theta, [len(images), images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
