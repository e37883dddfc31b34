import numpy as np
import pyarrow.parquet as pq

from jobs.common.storage import write_json
from jobs.score.output import (
    DEAD_LETTER_SCHEMA,
    Writer,
    batch_name,
    load_state,
    output_schema,
    remove_orphans,
    reopen_dead_letters,
)


def _batch(rows: list[tuple]) -> dict:
    """rows: (source, sample, last, dead, error_code)"""
    n = len(rows)
    return {
        "source_uri": np.array([r[0] for r in rows]),
        "media_type": np.array(["video"] * n),
        "source_format": np.array(["h264"] * n),
        "source_size": np.array([100] * n),
        "frame_index": np.array([-1 if r[3] else 10 * r[1] for r in rows]),
        "timestamp_s": np.array([np.nan if r[3] else float(r[1]) for r in rows]),
        "width": np.array([0 if r[3] else 32 for r in rows]),
        "height": np.array([0 if r[3] else 24 for r in rows]),
        "error": np.array([f"{r[4]}: detail" if r[4] else "" for r in rows]),
        "error_code": np.array([r[4] or "" for r in rows]),
        "_sample": np.array([r[1] for r in rows], dtype=np.int32),
        "_last": np.array([r[2] for r in rows]),
        "_dead": np.array([r[3] for r in rows]),
        "quality_sharpness": np.array([np.nan if r[3] else 1.5 for r in rows]),
    }


def test_names_derive_from_the_keys_not_their_order():
    a = batch_name(np.array(["s3://b/x/clip.mp4", "s3://b/x/a.jpg"]), np.array([3, 0]))
    b = batch_name(np.array(["s3://b/x/a.jpg", "s3://b/x/clip.mp4"]), np.array([0, 3]))
    assert a == b and a.startswith("a.jpg-")
    assert a != batch_name(np.array(["s3://b/x/a.jpg", "s3://b/x/clip.mp4"]), np.array([0, 4]))


def test_writer_splits_rows_and_dead_letters_with_nulls_and_commits(tmp_path):
    out = str(tmp_path)
    batch = _batch(
        [("v1", 0, False, False, None), ("v1", 1, True, False, None), ("bad", 0, True, True, "empty_object")]
    )
    summary = Writer(out)(batch)
    name = str(summary["file"][0])
    rows = pq.read_table(tmp_path / "rows" / f"{name}.parquet")
    assert rows.schema.equals(output_schema())
    assert rows.column("frame_index").to_pylist() == [0, 10]
    assert rows.column("error").to_pylist() == [None, None]
    assert rows.column("quality_sharpness").to_pylist() == [1.5, 1.5]
    dead = pq.read_table(tmp_path / "dead_letter" / f"{name}.parquet")
    assert dead.schema.equals(DEAD_LETTER_SCHEMA)
    assert dead.to_pylist() == [
        {"source_uri": "bad", "media_type": "video", "source_size": 100, "error_code": "empty_object",
         "error": "empty_object: detail"}
    ]  # fmt: skip
    assert (summary["rows"][0], summary["dead"][0], summary["sources_done"][0]) == (2, 1, 2)
    assert load_state(out).names == {name}


def test_completeness_needs_every_sample_up_to_the_last(tmp_path):
    out = str(tmp_path)
    Writer(out)(_batch([("done", 0, False, False, None), ("done", 1, True, False, None)]))
    Writer(out)(_batch([("gap", 0, False, False, None), ("gap", 2, True, False, None)]))
    Writer(out)(_batch([("open", 0, False, False, None), ("open", 1, False, False, None)]))
    Writer(out)(_batch([("dead", 0, True, True, "image_truncated")]))
    done, partial = load_state(out).complete_sources()
    assert done == {"done", "dead"}
    assert partial == {"gap": [0, 2], "open": [0, 1]}


def test_files_without_a_commit_are_orphans(tmp_path):
    out = str(tmp_path)
    kept = str(Writer(out)(_batch([("a", 0, True, False, None)]))["file"][0])
    orphan = str(Writer(out)(_batch([("b", 0, True, False, None), ("c", 0, True, True, "x")]))["file"][0])
    (tmp_path / "_commits" / f"{orphan}.parquet").unlink()  # as if killed before the commit
    state = load_state(out)
    assert state.names == {kept}
    assert remove_orphans(out, state.names) == 2
    assert sorted(p.name for p in (tmp_path / "rows").iterdir()) == [f"{kept}.parquet"]
    assert not list((tmp_path / "dead_letter").iterdir())


def test_chosen_dead_letter_codes_are_reopened_and_the_rest_stay(tmp_path):
    out = str(tmp_path)
    rows = [("a", 0, True, True, "read_error"), ("b", 0, True, True, "image_truncated"), ("c", 0, True, False, None)]
    mixed = str(Writer(out)(_batch(rows))["file"][0])
    only_a = str(Writer(out)(_batch([("a2", 0, True, True, "read_error")]))["file"][0])
    assert reopen_dead_letters(out, load_state(out), {"read_error", "not_found"}) == ["a", "a2"]
    state = load_state(out)
    done, partial = state.complete_sources()
    assert done == {"b", "c"} and partial == {}  # a and a2 are to do again; b stays dead, c stays written
    dead = pq.read_table(tmp_path / "dead_letter" / f"{mixed}.parquet")
    assert dead.column("source_uri").to_pylist() == ["b"]
    assert not (tmp_path / "_commits" / f"{only_a}.parquet").exists() and state.names == {mixed}
    assert not (tmp_path / "dead_letter" / f"{only_a}.parquet").exists()  # nothing of a2 is left
    assert remove_orphans(out, state.names) == 0
    assert reopen_dead_letters(out, load_state(out), {"read_error"}) == []  # nothing left with that code


def test_a_reopening_killed_half_way_is_finished_by_the_next_run(tmp_path):
    out = str(tmp_path)
    name = str(Writer(out)(_batch([("a", 0, True, True, "read_error"), ("b", 0, True, True, "x")]))["file"][0])
    write_json(f"{out}/_retry.json", {"sources": ["a"], "files": [name]})  # the plan, and then the kill
    assert reopen_dead_letters(out, load_state(out), set()) == ["a"]  # a run without the flag finishes it
    assert load_state(out).complete_sources()[0] == {"b"} and not (tmp_path / "_retry.json").exists()
    assert pq.read_table(tmp_path / "dead_letter" / f"{name}.parquet").column("source_uri").to_pylist() == ["b"]
