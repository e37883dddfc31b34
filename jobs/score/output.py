"""The output of ``mediascore score``: fixed schemas, the Ray-free writer, and the commit log behind resume.

Layout under the output URI::

    rows/<name>.parquet         one row per image or sampled frame (OUTPUT_SCHEMA)
    dead_letter/<name>.parquet  one row per input that failed as a whole (DEAD_LETTER_SCHEMA)
    _commits/<name>.parquet     the keys a writer batch wrote; written last, so it marks the batch complete
    _job.json                   input, stages and the config fingerprint of the run that owns this output
    _manifest.json              written at the end: every data file with its row count, and the totals

``<name>`` is the first source's file name plus a hash of the batch's (source, sample) keys: it derives from the
inputs, so a retried batch overwrites its own files. A data file without a commit is an orphan of an interrupted
run and is deleted before the next run goes on; a source counts as complete when all of its samples, up to the
one flagged last, are committed. Together these give exactly one row per (source, frame) after any number of
interrupted runs.
"""

from __future__ import annotations

import collections
import hashlib
import io
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.common import storage, transient

BASE_FIELDS = [
    pa.field("source_uri", pa.string(), nullable=False),
    pa.field("media_type", pa.string()),
    pa.field("source_format", pa.string()),
    pa.field("source_size", pa.int64()),
    pa.field("frame_index", pa.int64()),
    pa.field("timestamp_s", pa.float64()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("error", pa.string()),
    pa.field("error_code", pa.string()),
]
DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("media_type", pa.string()),
        pa.field("source_size", pa.int64()),
        pa.field("error_code", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
    ]
)
COMMIT_SCHEMA = pa.schema(
    [
        pa.field("source_uri", pa.string()),
        pa.field("sample", pa.int32()),
        pa.field("last", pa.bool_()),
        pa.field("dead", pa.bool_()),
        pa.field("media_type", pa.string()),
        pa.field("error_code", pa.string()),
    ]
)


def output_schema() -> pa.Schema:
    """The fixed schema of ``rows/``: base columns, then every registered stage's columns (null when not run)."""
    from jobs.score.stages import STAGES

    stage_fields = [pa.field(n, t) for stage in STAGES.values() for n, t in stage.columns.items()]
    return pa.schema(BASE_FIELDS + stage_fields)


def batch_name(sources: np.ndarray, samples: np.ndarray) -> str:
    keys = sorted(zip(sources.tolist(), samples.tolist(), strict=True))
    digest = hashlib.sha1("\n".join(f"{s}\t{n}" for s, n in keys).encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", keys[0][0].rsplit("/", 1)[-1])[:48]
    return f"{stem}-{digest}"


_BASE_NAMES = {f.name for f in BASE_FIELDS}
_SENTINELS = {"frame_index": -1, "source_size": -1, "width": 0, "height": 0}  # "no value" while in transit


def _column(batch: dict[str, np.ndarray], name: str, dtype: pa.DataType, mask: np.ndarray, n: int) -> pa.Array:
    if name not in batch:
        return pa.nulls(n, dtype)
    values = batch[name][mask]
    if name in _SENTINELS:
        values = values.astype(np.int64)
        return pa.array(values, mask=values == _SENTINELS[name]).cast(dtype)
    if dtype == pa.string() and name in _BASE_NAMES:  # "" is "no value" in transit; stages' "" stays ""
        return pa.array([None if v == "" or v is None else str(v) for v in values], type=dtype)
    return pa.array(values, type=dtype, from_pandas=True)


def _table(batch: dict[str, np.ndarray], schema: pa.Schema, mask: np.ndarray) -> pa.Table:
    n = int(mask.sum())
    return pa.Table.from_arrays([_column(batch, f.name, f.type, mask, n) for f in schema], schema=schema)


def _write_parquet(table: pa.Table, uri: str, compression: str) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=None if compression == "none" else compression)
    storage.write_bytes(uri, sink.getvalue())


class Writer:
    """Final step: writes a batch of rows as one Parquet file per table, then its commit record.

    Rows marked ``_pending`` (their source's store stayed unavailable) are counted and dropped: nothing of them is
    written, so their source stays open for the next run. Writes retry transient store errors under ``retry``.
    Returns a one-row summary batch (file name and counts) that the driver aggregates for progress.
    """

    def __init__(self, output_uri: str, compression: str = "zstd", retry: transient.RetryPolicy | None = None):
        self.output_uri = output_uri
        self.compression = compression
        self.schema = output_schema()
        self.retry = retry or transient.RetryPolicy()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pending = np.asarray(batch.get("_pending", np.zeros(len(batch["source_uri"]), bool)), bool)
        summary = {"pending": np.array([int(pending.sum())])}
        if pending.any():
            summary["pending_sources"] = np.array(["\n".join(sorted(set(batch["source_uri"][pending])))])
            batch = {key: value[~pending] for key, value in batch.items()}
        else:
            summary["pending_sources"] = np.array([""])
        if not len(batch["source_uri"]):
            return {"file": np.array([""]), "rows": np.array([0]), "dead": np.array([0]),
                    "sources_done": np.array([0])} | summary  # fmt: skip
        name = batch_name(batch["source_uri"], batch["_sample"])
        dead = batch["_dead"].astype(bool)
        if (~dead).any():
            self._write(_table(batch, self.schema, ~dead), "rows", name)
        if dead.any():
            self._write(_table(batch, DEAD_LETTER_SCHEMA, dead), "dead_letter", name)
        everything = np.ones(len(dead), bool)
        commit = _table(
            {**batch, "sample": batch["_sample"], "last": batch["_last"], "dead": dead}, COMMIT_SCHEMA, everything
        )
        self._write(commit, "_commits", name)  # last: a batch counts once its commit record is there
        return {
            "file": np.array([name]),
            "rows": np.array([int((~dead).sum())]),
            "dead": np.array([int(dead.sum())]),
            "sources_done": np.array([int(batch["_last"].sum())]),
        } | summary

    def _write(self, table: pa.Table, folder: str, name: str) -> None:
        uri = self._uri(folder, name)
        transient.retrying(lambda: _write_parquet(table, uri, self.compression), self.retry, f"write {uri}")

    def _uri(self, folder: str, name: str) -> str:
        return storage.join(self.output_uri, folder, f"{name}.parquet")


@dataclass
class OutputState:
    """What earlier runs committed under an output URI."""

    commits: pa.Table
    names: set[str] = field(default_factory=set)

    def complete_sources(self) -> tuple[set[str], dict[str, list[int]]]:
        """Sources that are done, and for the others the samples already written."""
        by_source: dict[str, list] = collections.defaultdict(lambda: [set(), None, False])
        for src, sample, last, dead in zip(
            *(self.commits.column(c).to_pylist() for c in ("source_uri", "sample", "last", "dead")), strict=True
        ):
            entry = by_source[src]
            entry[0].add(sample)
            if last:
                entry[1] = sample
            entry[2] |= dead
        done, partial = set(), {}
        for src, (samples, last, dead) in by_source.items():
            if dead or (last is not None and samples >= set(range(last + 1))):
                done.add(src)
            else:
                partial[src] = sorted(samples)
        return done, partial


def list_names(output_uri: str, folder: str) -> set[str]:
    """The ``<name>`` of every Parquet file in ``folder`` of the output."""
    return {
        obj.uri.rsplit("/", 1)[-1][: -len(".parquet")]
        for obj in storage.list_objects(storage.join(output_uri, folder), extensions=[".parquet"])
    }


def load_state(output_uri: str) -> OutputState:
    """Read every commit record under ``output_uri`` (empty state for a new output), with a ``file`` column.

    All of them at once, in memory: for ``--retry-dead-letter`` and tests. A run's resume goes through
    :func:`jobs.score.resume.scan_commits`, whose memory stays bounded as the output grows."""
    names = list_names(output_uri, "_commits")
    tables = [COMMIT_SCHEMA.empty_table().append_column("file", pa.array([], pa.string()))]
    fs, path = storage.resolve(storage.join(output_uri, "_commits"))
    for name in sorted(names):
        table = pq.read_table(f"{path}/{name}.parquet", filesystem=fs, schema=COMMIT_SCHEMA)
        tables.append(table.append_column("file", pa.array([name] * table.num_rows, pa.string())))
    return OutputState(commits=pa.concat_tables(tables), names=names)


def remove_orphans(output_uri: str, committed: set[str]) -> int:
    """Delete data files that have no commit record (left by an interrupted run). Returns how many."""
    removed = 0
    for folder in ("rows", "dead_letter"):
        for name in list_names(output_uri, folder) - committed:
            storage.delete(storage.join(output_uri, folder, f"{name}.parquet"))
            removed += 1
    return removed


def reopen_dead_letters(output_uri: str, state: OutputState, codes: set[str], compression: str = "zstd") -> list[str]:
    """Take the dead-lettered sources whose ``error_code`` is in ``codes`` out of the output, so that the run does
    them again (``mediascore score --retry-dead-letter CODES``). Returns those sources.

    Their commit records go first (an object replaced whole), then their dead-letter rows. The plan is written to
    ``_retry.json`` before anything changes and removed after, so a run killed half-way finishes the job the next
    time it starts, whatever codes it is given then.
    """
    plan_uri = storage.join(output_uri, "_retry.json")
    plan = storage.read_json(plan_uri)
    if plan is None:
        commits = state.commits
        code_in = pc.is_in(commits.column("error_code"), pa.array(sorted(codes), pa.string()))
        chosen = pc.and_(commits.column("dead"), code_in)
        picked = commits.filter(chosen)
        plan = {"sources": sorted(set(picked.column("source_uri").to_pylist())),
                "files": sorted(set(picked.column("file").to_pylist()))}  # fmt: skip
        if not plan["sources"]:
            return []
        storage.write_json(plan_uri, plan)
    sources = pa.array(plan["sources"], pa.string())
    for name in plan["files"]:
        for folder, schema in (("_commits", COMMIT_SCHEMA), ("dead_letter", DEAD_LETTER_SCHEMA)):
            _drop_sources(storage.join(output_uri, folder, f"{name}.parquet"), schema, sources, compression)
    storage.delete(plan_uri)
    return plan["sources"]


def _drop_sources(uri: str, schema: pa.Schema, sources: pa.Array, compression: str) -> None:
    """Rewrite one Parquet object without the dead rows of ``sources`` (deleted when nothing is left)."""
    if not storage.exists(uri):
        return
    fs, path = storage.resolve(uri, object_key=True)
    table = pq.read_table(path, filesystem=fs, schema=schema)
    drop = pc.is_in(table.column("source_uri"), sources)
    if "dead" in table.column_names:
        drop = pc.and_(drop, table.column("dead"))
    kept = table.filter(pc.invert(drop))
    if kept.num_rows == table.num_rows:
        return
    if kept.num_rows == 0:
        storage.delete(uri)
    else:
        _write_parquet(kept, uri, compression)
