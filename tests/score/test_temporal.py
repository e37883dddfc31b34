"""The N-frame agreement pass: runs, gaps, errors and N = 1 on hand-made sequences; the tables it writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.score.temporal import agreement, runs_of, video_summary


def test_runs_and_agreement_of_a_plain_sequence():
    runs, agreed = runs_of(["cat"] * 5 + ["dog"] * 2 + ["cat"] * 3, n=3)
    assert runs == [5] * 5 + [2] * 2 + [3] * 3
    assert agreed == [True] * 5 + [False] * 2 + [True] * 3


def test_n_1_accepts_every_prediction_and_none_breaks_a_run():
    runs, agreed = runs_of(["cat", "cat", None, "cat"], n=1)
    assert runs == [2, 2, 0, 1] and agreed == [True, True, False, True]


def _video(uri: str, preds: list, times: list | None = None, errors: dict | None = None) -> pd.DataFrame:
    times = list(np.arange(len(preds), dtype=float)) if times is None else times
    errors = errors or {}
    return pd.DataFrame({
        "source_uri": uri, "frame_index": np.arange(len(preds)) * 25, "timestamp_s": times,
        "error": [errors.get(i) for i in range(len(preds))], "cam_class": pd.Series(preds, dtype=object),
    })  # fmt: skip


def test_an_error_row_breaks_the_run_and_has_no_run_of_its_own():
    rows = _video("v", ["cat"] * 3 + [None] + ["cat"] * 3, errors={3: "frame_decode_error: bad packet"})
    out = agreement(rows, "cam_class", n=4)
    assert out.cam_class_run.tolist() == [3, 3, 3, 0, 3, 3, 3] and not out.cam_class_agreed.any()
    assert agreement(rows, "cam_class", n=3).cam_class_agreed.sum() == 6


def test_a_gap_in_time_breaks_the_run():
    rows = _video("v", ["cat"] * 6, times=[0.0, 1.0, 2.0, 6.0, 7.0, 8.0])  # the 3-5 s frames left no row
    assert agreement(rows, "cam_class", n=4).cam_class_run.tolist() == [3] * 6
    assert agreement(rows, "cam_class", n=4, max_gap=5).cam_class_run.tolist() == [6] * 6


def test_rows_come_in_any_order_and_videos_stay_apart():
    rows = pd.concat([_video("a", ["cat"] * 4), _video("b", ["cat"] * 4)]).sample(frac=1, random_state=0)
    out = agreement(rows, "cam_class", n=5)
    assert out.source_uri.tolist() == ["a"] * 4 + ["b"] * 4 and out.cam_class_run.tolist() == [4] * 8


def test_video_summary_takes_the_longest_agreed_run():
    rows = pd.concat([
        _video("a", ["dog"] * 5 + ["cat"] * 7 + ["dog"] * 5),
        _video("b", ["cat", "dog"] * 4),
    ])  # fmt: skip
    videos = video_summary(agreement(rows, "cam_class", n=5), "cam_class").set_index("source_uri")
    assert videos.loc["a", "video_class"] == "cat" and videos.loc["a", "agreed_frames"] == 17
    assert (videos.loc["a", "first_agreed_s"], videos.loc["a", "last_agreed_s"]) == (5.0, 11.0)
    assert pd.isna(videos.loc["b", "video_class"]) and np.isnan(videos.loc["b", "first_agreed_s"])
    assert videos.loc["b", "frames"] == 8


@pytest.mark.parametrize("n", [5, 10])
def test_agreement_is_idempotent(n):
    rows = _video("a", ["dog"] * 12 + ["cat"] * 3)
    once = agreement(rows, "cam_class", n)
    twice = agreement(once.drop(columns=["cam_class_run", "cam_class_agreed"]), "cam_class", n)
    pd.testing.assert_frame_equal(once, twice)


def test_temporal_on_a_real_score_output_of_the_corpus_videos(ray_local, trained, corpus):
    import json
    import subprocess
    import sys

    from jobs.common import storage
    from jobs.common.config import load_config
    from jobs.common.storage import read_json
    from jobs.score.pipeline import run_score

    output, _ = trained
    corpus_uri, _ = corpus
    checkpoint = read_json(storage.join(output, "latest.json"))["checkpoint"]
    overrides = {"stages": {"run": ["cam"], "cam": {"checkpoint": checkpoint}}, "temporal": {"enabled": True, "n": 2}}
    out = "s3://test-scores/temporal"
    summary = run_score(corpus_uri, out, load_config(overrides=overrides), echo=lambda s: None)
    assert summary.locations["videos"].rstrip("/").endswith("/temporal/videos")

    def table(name: str) -> pd.DataFrame:
        fs, path = storage.resolve(storage.join(out, name))
        return pd.read_parquet(path, filesystem=fs)

    rows = table("rows")
    video_rows = rows[rows.media_type == "video"]
    frames, videos = table("temporal/frames.parquet"), table("videos/videos.parquet")
    assert len(frames) == len(video_rows) and {"cam_class_run", "cam_class_agreed"} <= set(frames.columns)
    assert set(videos.source_uri) == set(video_rows.source_uri)
    assert (frames.cam_class_agreed == (frames.cam_class_run >= 2)).all()
    with_class = videos[videos.video_class.notna()]
    assert (with_class.first_agreed_s <= with_class.last_agreed_s).all()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "jobs.cli", "temporal", "--output", out, *args],
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    first = cli("--n", "5", "--mode", "filter")
    assert first.returncode == 0, first.stderr[-2000:]
    result = json.loads(first.stdout.strip().splitlines()[-1])
    filtered = table("temporal/frames.parquet")
    assert result["agreed_frames"] == len(filtered) and filtered.cam_class_agreed.all()
    assert (filtered.cam_class_run >= 5).all() and result["videos"] == len(videos)
    again = cli("--n", "5", "--mode", "filter")
    assert json.loads(again.stdout.strip().splitlines()[-1]) == result  # reruns give the same tables
    pd.testing.assert_frame_equal(table("temporal/frames.parquet"), filtered)
    for column in ("ocr_text", "no_such_column"):  # a stage that did not run; a column no stage writes
        missing = cli("--column", column)
        assert missing.returncode == 2 and column in missing.stderr
