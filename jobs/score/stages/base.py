"""The stage interface every ``mediascore score`` stage implements. Ray-free.

A stage is a callable class: it loads what it needs (models, engines) once in ``__init__`` and maps a batch
(a dict of numpy arrays, one entry per row) to the same batch with its own columns added. A failure on a row is
recorded in that row's ``error`` and the batch goes on.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from jobs.media.decode import describe

log = logging.getLogger(__name__)


class Stage:
    """Base of batch stages.

    Subclasses set ``name`` and ``columns`` (the output columns with their Arrow types, part of the fixed output
    schema) and implement :meth:`process` over the decoded pixels of the rows that have them. Float columns use
    NaN for "no value"; the writer turns it into null.
    """

    name: ClassVar[str]
    columns: ClassVar[dict[str, pa.DataType]]

    def __init__(self, cfg: BaseModel):
        self.cfg = cfg

    def process(self, images: list[np.ndarray]) -> dict[str, list]:
        """Map RGB ``uint8`` images ``(H, W, 3)`` to one value per image for each of ``columns``."""
        raise NotImplementedError

    def process_rows(self, batch: dict[str, np.ndarray], rows: list[int]) -> dict[str, list]:
        """One value per row in ``rows`` for each of ``columns``. The default hands the pixels to :meth:`process`;
        stages that read columns of earlier stages override this instead."""
        return self.process([batch["pixels"][i] for i in rows])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["source_uri"])
        out = {name: [_empty(dtype)] * n for name, dtype in self.columns.items()}
        todo = [i for i in range(n) if "pixels" in batch and batch["pixels"][i].size > 0]
        try:
            if todo:
                self._assign(out, todo, self.process_rows(batch, todo))
        except Exception:  # one bad row must not sink the batch: redo row by row to find it
            log.exception("stage %s failed on a batch of %d rows; retrying row by row", self.name, len(todo))
            for i in todo:
                try:
                    self._assign(out, [i], self.process_rows(batch, [i]))
                except Exception as exc:
                    _record_error(batch, i, f"stage_error: {self.name}: {type(exc).__name__}: {describe(exc)}")
        for name, dtype in self.columns.items():
            batch[name] = _to_array(out[name], dtype)
        return batch

    def _assign(self, out: dict[str, list], rows: list[int], result: dict[str, list]) -> None:
        for name in self.columns:
            values = result[name]
            if len(values) != len(rows):
                raise ValueError(f"stage {self.name} returned {len(values)} values of {name} for {len(rows)} rows")
            for i, value in zip(rows, values, strict=True):
                out[name][i] = value


def _empty(dtype: pa.DataType):
    return float("nan") if pa.types.is_floating(dtype) else None


def _to_array(values: list, dtype: pa.DataType) -> np.ndarray:
    if pa.types.is_floating(dtype):
        return np.asarray(values, dtype=np.float64)
    out = np.empty(len(values), dtype=object)  # element by element: lists must stay cells, not a second axis
    for i, value in enumerate(values):
        out[i] = value
    return out


def _record_error(batch: dict[str, np.ndarray], i: int, message: str) -> None:
    if batch["error"].dtype != object:
        batch["error"] = batch["error"].astype(object)
        batch["error_code"] = batch["error_code"].astype(object)
    batch["error"][i] = f"{batch['error'][i]}; {message}" if batch["error"][i] else message
    batch["error_code"][i] = batch["error_code"][i] or "stage_error"


class ChainedStages:
    """Several stages run one after the other inside one actor (for small machines: one pool instead of many)."""

    def __init__(self, stages: list[Stage]):
        self.stages = stages

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for stage in self.stages:
            batch = stage(batch)
        return batch
