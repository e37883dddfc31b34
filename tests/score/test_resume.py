"""The bounded-memory resume scan agrees with reading every commit record at once, over many partitions."""

from __future__ import annotations

import collections

import numpy as np
import pyarrow as pa
import pytest

from jobs.score.ingest import MediaObject
from jobs.score.output import COMMIT_SCHEMA, _write_parquet, load_state
from jobs.score.resume import scan_commits


def _commits(out: str, seed: int) -> list[str]:
    """Random commit files: complete, partial (a video cut off) and dead sources, one source's rows spread over
    several files; returns every source named."""
    rng = np.random.default_rng(seed)
    sources, rows = [f"s3://in/{i:04d}.{'mp4' if i % 3 else 'jpg'}" for i in range(300)], []
    for i, src in enumerate(sources):
        video = i % 3 != 0
        n = int(rng.integers(1, 6)) if video else 1
        kept = n - int(rng.integers(0, 2)) if video else n  # a partial video lacks its last samples
        dead = rng.random() < 0.1
        for k in range(1 if dead else kept):
            rows.append((src, k, dead or k == n - 1, dead, "video" if video else "image", "bad" if dead else None))
    order = rng.permutation(len(rows))
    for f, chunk in enumerate(np.array_split(order, 37)):
        cols = list(zip(*(rows[j] for j in chunk), strict=True))
        table = pa.table(dict(zip(COMMIT_SCHEMA.names, cols, strict=True)), schema=COMMIT_SCHEMA)
        _write_parquet(table, f"{out}/_commits/f{f:03d}.parquet", "zstd")
    return sources


@pytest.mark.parametrize("rows_per_partition", [10_000, 37])
def test_the_scan_finds_what_the_full_read_finds(tmp_path, rows_per_partition):
    out = str(tmp_path / "out")
    sources = _commits(out, seed=rows_per_partition)
    listed = [MediaObject(s, 1, "video") for s in [*sources, "s3://in/new.jpg"]]
    done, partial = load_state(out).complete_sources()
    with scan_commits(out, rows_per_partition=rows_per_partition) as scan:
        assert (scan.partitions == 1) == (rows_per_partition > 1000)
        todo, scan_partial = scan.todo(listed)
        assert [m.uri for m in todo] == [m.uri for m in listed if m.uri not in done]
        assert scan_partial == partial and partial  # some videos are cut off
        state = load_state(out).commits
        assert scan.totals.records == state.num_rows
        assert scan.totals.rows == state.num_rows - sum(state.column("dead").to_pylist())
        alive = {(s, t) for s, t, d in zip(*(state.column(c).to_pylist() for c in ("source_uri", "media_type",
                 "dead")), strict=True) if not d}  # fmt: skip
        assert scan.sources() == collections.Counter(t for _, t in alive)


def test_a_new_output_has_nothing_done(tmp_path):
    with scan_commits(str(tmp_path / "new")) as scan:
        todo, partial = scan.todo([MediaObject("s3://in/a.jpg", 1, "image")])
    assert [m.uri for m in todo] == ["s3://in/a.jpg"] and partial == {} and scan.names == set()
