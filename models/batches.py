"""Type-stratified batches (seed 002, claim 7): every batch covers every image type of the training set.

Per-type counts in a batch are equal (``quota: equal``; the remainder of ``batch_size / n_types`` goes to a different
type each batch) or proportional to the type's share of the set (``quota: proportional``, at least one each).
Without replacement, each type is drawn from its own reshuffled cycle, so over an epoch every image is seen about as
often as its quota allows and a small type repeats before a large one does (batches may overlap, which the patent
allows). With replacement, every batch is an independent draw. An epoch has ``ceil(n / batch_size)`` batches either
way; the draws are reproducible from the seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass
class BatchConfig:
    """``train.batches``: ``stratify_by`` a column (``image_type``) or ``None`` for plain shuffled batches."""

    stratify_by: str | None = None
    quota: Literal["equal", "proportional"] = "equal"
    replacement: bool = False

    def __post_init__(self) -> None:
        if self.quota not in ("equal", "proportional"):
            raise ValueError(f"batches.quota must be 'equal' or 'proportional', got {self.quota!r}")


def type_quotas(counts: dict[str, int], batch_size: int, quota: str) -> dict[str, int]:
    """Images of each type in a batch of ``batch_size`` (before the equal quota's rotating remainder)."""
    types = sorted(counts)
    if batch_size < len(types):
        raise ValueError(
            f"a stratified batch must hold every image type: batch_size {batch_size} < {len(types)} types {types}"
        )
    if quota == "equal":
        return dict.fromkeys(types, batch_size // len(types))
    total = sum(counts.values())
    exact = {t: batch_size * counts[t] / total for t in types}
    out = {t: max(1, int(exact[t])) for t in types}
    by_remainder = sorted(types, key=lambda t: exact[t] - int(exact[t]), reverse=True)
    i = 0
    while sum(out.values()) < batch_size:  # largest remainders first
        out[by_remainder[i % len(types)]] += 1
        i += 1
    while sum(out.values()) > batch_size:  # the minimum of one pushed it over: take from the largest
        out[max((t for t in types if out[t] > 1), key=out.get)] -= 1
    return out


class StratifiedBatches:
    """Index batches over rows with the given type labels; iterate once per epoch.

    Args:
        types: the type of each row (any hashable values).
        batch_size: rows per batch.
        cfg: quota and replacement.
        seed: the generator's seed (give each epoch and each worker its own).
        n_batches: batches per iteration (default ``ceil(len(types) / batch_size)``); data-parallel workers pass the
            same number so that they stay in step.
    """

    def __init__(self, types, batch_size: int, cfg: BatchConfig, seed: int, n_batches: int | None = None):
        types = np.asarray(types)
        if len(types) == 0:
            raise ValueError("no rows to draw stratified batches from")
        self.groups = {str(t): np.flatnonzero(types == t) for t in np.unique(types)}
        self.quotas = type_quotas({t: len(i) for t, i in self.groups.items()}, batch_size, cfg.quota)
        self.batch_size, self.cfg = batch_size, cfg
        self.rng = np.random.default_rng(seed)
        self.n_batches = -(-len(types) // batch_size) if n_batches is None else n_batches
        self._cycles = {t: _Cycle(idx, self.rng) for t, idx in self.groups.items()}

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[np.ndarray]:
        names = sorted(self.groups)
        for b in range(self.n_batches):
            counts = dict(self.quotas)
            for i in range(self.batch_size - sum(counts.values())):  # the equal quota's remainder rotates
                counts[names[(b + i) % len(names)]] += 1
            parts = [self._draw(t, k) for t, k in counts.items()]
            batch = np.concatenate(parts)
            yield batch[self.rng.permutation(len(batch))]

    def _draw(self, name: str, k: int) -> np.ndarray:
        if self.cfg.replacement:
            return self.rng.choice(self.groups[name], size=k, replace=True)
        return self._cycles[name].take(k)


class _Cycle:
    """One type's rows in a shuffled order, reshuffled whenever it runs out."""

    def __init__(self, idx: np.ndarray, rng: np.random.Generator):
        self.idx, self.rng = idx, rng
        self.order, self.pos = rng.permutation(idx), 0

    def take(self, k: int) -> np.ndarray:
        out = []
        while k > 0:
            if self.pos == len(self.order):
                self.order, self.pos = self.rng.permutation(self.idx), 0
            n = min(k, len(self.order) - self.pos)
            out.append(self.order[self.pos : self.pos + n])
            self.pos, k = self.pos + n, k - n
        return np.concatenate(out)
