"""Whole images of any size through a same-size network, tile by tile, with blended seams.

Tiles of ``tile`` pixels overlap by ``overlap``; the last tile of a row or column is aligned to the image's edge,
so every tile has the full size. Each tile's output is weighted by a window that ramps linearly from almost 0 at a
tile edge that faces another tile to 1 at ``overlap`` pixels inside (edges on the image border keep weight 1), and
the weighted outputs are divided by the summed weights. Where tiles overlap, the result therefore fades from one
tile to the next instead of switching at a line. Away from the overlaps the output is exactly one tile's output,
which equals the untiled output wherever the tile's edge is farther away than the network's receptive radius;
inside an overlap, the pixels nearest a tile's edge (where its zero padding changes the output) get the least
weight.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: step ``tile - overlap``, the last tile flush with the end."""
    if tile >= size:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    return [*starts, size - tile]


def _ramp(length: int, overlap: int, fade_start: bool, fade_end: bool, device: torch.device) -> Tensor:
    w = torch.ones(length, device=device)
    if overlap > 0:
        ramp = torch.arange(1, overlap + 1, device=device, dtype=torch.float32) / (overlap + 1)
        if fade_start:
            w[:overlap] = torch.minimum(w[:overlap], ramp)
        if fade_end:
            w[-overlap:] = torch.minimum(w[-overlap:], ramp.flip(0))
    return w


def tiled_apply(fn: Callable[[Tensor], Tensor], x: Tensor, tile: int, overlap: int, batch: int = 4) -> Tensor:
    """``fn`` over ``x`` ``(B, C, H, W)`` tile by tile; ``fn`` must keep the spatial size.

    Args:
        fn: a same-size network (called on ``(n, C, tile, tile)`` stacks of up to ``batch`` tiles per image).
        x: the input.
        tile: tile side in pixels (images smaller than a tile go through in one call).
        overlap: pixels shared by neighbouring tiles; must be below ``tile``.
        batch: tiles per call.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile): got overlap={overlap}, tile={tile}")
    _, _, h, w = x.shape
    if h <= tile and w <= tile:
        return fn(x)
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    boxes = [(y, x0) for y in ys for x0 in xs]
    out, norm = None, torch.zeros(1, 1, h, w, device=x.device)
    for i in range(0, len(boxes), batch):
        chunk = boxes[i : i + batch]
        crops = torch.cat([x[:, :, y : y + tile, x0 : x0 + tile] for y, x0 in chunk])  # (n*B, C, th, tw)
        result = fn(crops).reshape(len(chunk), x.shape[0], -1, *crops.shape[-2:])
        if out is None:
            out = torch.zeros(x.shape[0], result.shape[2], h, w, device=x.device, dtype=result.dtype)
        for (y, x0), r in zip(chunk, result, strict=True):
            th, tw = r.shape[-2:]
            wy = _ramp(th, overlap, y > 0, y + th < h, x.device)
            wx = _ramp(tw, overlap, x0 > 0, x0 + tw < w, x.device)
            weight = (wy[:, None] * wx[None, :])[None, None]  # (1, 1, th, tw)
            out[:, :, y : y + th, x0 : x0 + tw] += r * weight
            norm[:, :, y : y + th, x0 : x0 + tw] += weight
    return out / norm
