"""Resume state of a ``score`` output in bounded driver memory, however many rows earlier runs committed.

:func:`scan_commits` reads the commit records one file at a time. It keeps only what is small per file (row and
dead-letter counts, error codes, frames) and spills each row's key to local Arrow files, partitioned by a hash of
its source, so that every row of one source lands in one partition. :meth:`CommitScan.todo` then takes the listing
one partition at a time: the sources of a partition are grouped, the complete ones dropped from the listing, the
partial ones given their written samples. The driver holds one partition at a time, about
``rows_per_partition`` rows, instead of every commit record (see ``bench/scale.py`` for the measured peak).
"""

from __future__ import annotations

import collections
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.common import storage
from jobs.score.output import COMMIT_SCHEMA, list_names

ROWS_PER_PARTITION = 50_000
SPILL_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")  # keys share long URI prefixes: they compress well
SPILL_SCHEMA = pa.schema(
    [("source_uri", pa.string()), ("sample", pa.int32()), ("last_sample", pa.int32()), ("dead", pa.bool_()),
     ("alive", pa.bool_()), ("media_type", pa.string())]
)  # fmt: skip


@dataclass
class Totals:
    """What the summary and the manifest report, summed over every commit record."""

    files: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> {"rows", "dead_letter"}
    errors: collections.Counter = field(default_factory=collections.Counter)
    frames: int = 0  # video rows without an error
    rows: int = 0
    records: int = 0
    sources: collections.Counter = field(default_factory=collections.Counter)  # media type -> sources with a row


class CommitScan:
    """The commit records of an output, spilled by source hash; see the module docstring."""

    def __init__(self, names: set[str], partitions: int, spill: tempfile.TemporaryDirectory, totals: Totals):
        self.names, self.partitions, self.totals = names, partitions, totals
        self._spill = spill
        self.folder = Path(spill.name)

    def close(self) -> None:
        """Remove the spill."""
        self._spill.cleanup()

    def __enter__(self) -> CommitScan:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _part(self, p: int) -> pa.Table:
        path = self.folder / f"{p}.arrow"
        if not path.exists():
            return SPILL_SCHEMA.empty_table()
        with pa.OSFile(str(path)) as source:
            return pa.ipc.open_stream(source).read_all()

    def todo(self, media: Sequence) -> tuple[list, dict[str, list[int]]]:
        """The objects of ``media`` (anything with a ``uri``) not yet complete, in their order, and for the partial
        ones the samples already written. Also fills ``totals.sources``."""
        keep = np.ones(len(media), bool)
        by_part = _partition_of([m.uri for m in media], self.partitions)
        partial: dict[str, list[int]] = {}
        for p in range(self.partitions):
            groups = _groups(self._part(p))
            for kind, count in collections.Counter(
                groups.filter(groups.column("alive_any")).column("media_type_min").to_pylist()
            ).items():
                self.totals.sources[kind] += count
            complete = pc.or_(
                groups.column("dead_any"),
                pc.equal(groups.column("sample_count_distinct"), pc.add(groups.column("last_sample_max"), 1)),
            )
            done = set(groups.filter(pc.fill_null(complete, False)).column("source_uri").to_pylist())
            for i in np.flatnonzero(by_part == p):
                keep[i] = media[i].uri not in done
            open_ = groups.filter(pc.invert(pc.fill_null(complete, False)))
            for uri, samples in zip(*(open_.column(c).to_pylist() for c in ("source_uri", "sample_distinct")),
                                    strict=True):  # fmt: skip
                partial[uri] = sorted(samples)
        return [m for m, k in zip(media, keep, strict=True) if k], partial

    def sources(self) -> collections.Counter:
        """Sources with at least one written row, by media type (for the summary when there was nothing to do)."""
        if not self.totals.sources:
            self.todo([])
        return self.totals.sources


def _groups(table: pa.Table) -> pa.Table:
    return table.group_by("source_uri").aggregate(
        [("sample", "count_distinct"), ("last_sample", "max"), ("dead", "any"), ("alive", "any"),
         ("media_type", "min"), ("sample", "distinct")]
    )  # fmt: skip


def _partition_of(uris: Sequence[str], partitions: int) -> np.ndarray:
    """The partition of each URI: a hash that is the same for the spill and the listing within one process."""
    return np.fromiter((hash(u) % partitions for u in uris), dtype=np.int64, count=len(uris))


def scan_commits(output_uri: str, spill_dir: str | Path | None = None, rows_per_partition: int = ROWS_PER_PARTITION):
    """Read every commit record under ``output_uri`` once, into a :class:`CommitScan` (a new output: an empty one).

    The number of partitions comes from the file count and the first file's row count, so that a partition holds
    about ``rows_per_partition`` rows. The spill goes to a temporary folder in ``spill_dir`` (the system's when
    unset), removed by the scan's ``close`` (or at the end of a ``with`` block).
    """
    names = list_names(output_uri, "_commits")
    fs, path = storage.resolve(storage.join(output_uri, "_commits"))
    ordered = sorted(names)
    per_file = pq.ParquetFile(f"{path}/{ordered[0]}.parquet", filesystem=fs).metadata.num_rows if ordered else 0
    partitions = max(1, math.ceil(len(ordered) * per_file / rows_per_partition))
    tmp = tempfile.TemporaryDirectory(dir=spill_dir, prefix="mediascore-resume-")
    folder = Path(tmp.name)
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    totals = Totals()
    for name in ordered:
        table = pq.read_table(f"{path}/{name}.parquet", filesystem=fs, schema=COMMIT_SCHEMA)
        spill = _count(table, name, totals)
        parts = _partition_of(spill.column("source_uri").to_pylist(), partitions)
        for p in np.unique(parts):
            if p not in writers:
                writers[p] = pa.ipc.new_stream(str(folder / f"{p}.arrow"), SPILL_SCHEMA, options=SPILL_OPTIONS)
            writers[p].write_table(spill.take(np.flatnonzero(parts == p)))
    for writer in writers.values():
        writer.close()
    return CommitScan(set(names), partitions, tmp, totals)


def _count(table: pa.Table, name: str, totals: Totals) -> pa.Table:
    """Add one commit file to ``totals``; its rows as the spill keeps them."""
    dead = table.column("dead")
    alive = pc.invert(dead)
    n_dead = pc.sum(dead.cast(pa.int64())).as_py() or 0
    totals.files[name] = {"rows": table.num_rows - n_dead, "dead_letter": n_dead}
    totals.rows += table.num_rows - n_dead
    totals.records += table.num_rows
    totals.errors.update(code for code in table.column("error_code").to_pylist() if code)
    video_ok = pc.and_(pc.and_(alive, pc.equal(table.column("media_type"), "video")),
                       pc.is_null(table.column("error_code")))  # fmt: skip
    totals.frames += pc.sum(video_ok.cast(pa.int64())).as_py() or 0
    last_sample = pc.if_else(table.column("last"), table.column("sample"), pa.scalar(None, pa.int32()))
    return pa.table(
        [table.column("source_uri"), table.column("sample"), last_sample, dead, alive, table.column("media_type")],
        schema=SPILL_SCHEMA,
    )
