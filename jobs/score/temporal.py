"""``mediascore temporal``: N-frame agreement over a finished ``score`` output (seed 002).

A prediction for a stretch of video is accepted only when the predictions of N consecutive sampled frames agree
(N = 5 by default; the patent also names 10). The frames of one video are spread over batches and actors while
``score`` runs, so this is a pass over the finished ``rows/`` table, not a stage.

Per video row (sorted by timestamp, then frame index): ``<column>_run``, the length of the run of equal
predictions that contains the row, and ``<column>_agreed`` (run >= N). A run breaks at a change of prediction, at a
row without one (a frame error, a null prediction: those rows get run 0) and at a gap: a step between consecutive
rows longer than ``max_gap`` times the video's median step (a frame that failed to decode and left no row, a
stretch the sampling skipped). Our choice, where the patent is silent: rows whose timestamp is unknown count as
one step apart.

Writes ``temporal/frames.parquet`` (every video row with the two columns in ``annotate`` mode, only the agreed
rows in ``filter`` mode) and ``videos/videos.parquet``, one row per video: ``video_class`` (the class of the longest
agreed run, the earliest on a tie; null when none), ``first_agreed_s`` and ``last_agreed_s`` (the first and last
timestamps agreed on that class), ``frames``, ``agreed_frames``. Both are rewritten whole on every run, so reruns
and runs after a resumed ``score`` give the same tables.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from jobs.common import storage
from jobs.common.config import TemporalConfig

KEYS = ["source_uri", "frame_index", "timestamp_s"]


def agreement(rows: pd.DataFrame, column: str, n: int, max_gap: float = 1.5) -> pd.DataFrame:
    """Video rows (``source_uri``, ``frame_index``, ``timestamp_s``, ``error``, ``column``) sorted, with
    ``<column>_run`` and ``<column>_agreed`` added."""
    df = rows.sort_values(["source_uri", "timestamp_s", "frame_index"], kind="stable", na_position="last")
    df = df.reset_index(drop=True)
    value = df[column]
    valid = value.notna() & (df["error"].isna() if "error" in df else True)
    video = df["source_uri"]
    new_video = video.ne(video.shift())
    step = df.groupby("source_uri", sort=False)["timestamp_s"].diff()
    typical = step.groupby(video, sort=False).transform("median")
    gap = (step > max_gap * typical).fillna(False)
    changed = value.ne(value.shift()) | ~valid | ~valid.shift(fill_value=False)
    run_id = (new_video | changed | gap).cumsum()
    run = df.groupby(run_id, sort=False)[column].transform("size").where(valid, 0).astype("int64")
    df[f"{column}_run"] = run
    df[f"{column}_agreed"] = run >= n
    return df


def video_summary(annotated: pd.DataFrame, column: str) -> pd.DataFrame:
    """One row per video from :func:`agreement`'s output (see the module docstring)."""
    agreed_col, run_col = f"{column}_agreed", f"{column}_run"
    out = []
    for uri, g in annotated.groupby("source_uri", sort=True):
        agreed = g[g[agreed_col]]
        cls, first, last = None, None, None
        if len(agreed):
            best = agreed.loc[agreed[run_col].idxmax()]  # idxmax: the first row of the longest run (sorted by time)
            cls = best[column]
            ts = agreed.loc[agreed[column] == cls, "timestamp_s"]
            first, last = ts.min(), ts.max()
        out.append({"source_uri": uri, "video_class": cls, "first_agreed_s": first, "last_agreed_s": last,
                    "frames": len(g), "agreed_frames": len(agreed)})  # fmt: skip
    cols = ["source_uri", "video_class", "first_agreed_s", "last_agreed_s", "frames", "agreed_frames"]
    return pd.DataFrame(out, columns=cols).astype({"first_agreed_s": "float64", "last_agreed_s": "float64"})


def read_video_rows(output_uri: str, column: str) -> pd.DataFrame:
    """The video rows of a score output, only the columns the pass needs."""
    fs, path = storage.resolve(storage.join(output_uri, "rows"))
    try:
        dataset = pads.dataset(path, filesystem=fs, format="parquet")
    except (FileNotFoundError, OSError) as exc:
        raise FileNotFoundError(f"{output_uri} has no rows/ table to read (is it a score output?): {exc}") from None
    if column not in dataset.schema.names:
        raise ValueError(f"column {column!r} is not in the rows of {output_uri} (was its stage run?)")
    wanted = [*KEYS, "error", column]
    table = dataset.to_table(columns=wanted, filter=pads.field("media_type") == "video")
    if table.num_rows and table.column(column).null_count == table.num_rows:
        raise ValueError(f"column {column!r} has no value in any video row of {output_uri} (was its stage run?)")
    return table.to_pandas()


def _write(df: pd.DataFrame, uri: str) -> None:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), sink, compression="zstd")
    storage.write_bytes(uri, sink.getvalue())


def run_temporal(output_uri: str, cfg: TemporalConfig) -> dict:
    """The pass over ``output_uri``; returns its summary (also what the CLI prints as its last line)."""
    rows = read_video_rows(output_uri, cfg.column)
    annotated = agreement(rows, cfg.column, cfg.n, cfg.max_gap)
    videos = video_summary(annotated, cfg.column)
    frames = annotated if cfg.mode == "annotate" else annotated[annotated[f"{cfg.column}_agreed"]]
    _write(frames, storage.join(output_uri, "temporal", "frames.parquet"))
    _write(videos, storage.join(output_uri, "videos", "videos.parquet"))
    n_frames = len(annotated)
    agreed = int(annotated[f"{cfg.column}_agreed"].sum())
    return {
        "output": output_uri, "column": cfg.column, "n": cfg.n, "mode": cfg.mode, "videos": len(videos),
        "videos_with_class": int(videos.video_class.notna().sum()), "frames": n_frames, "agreed_frames": agreed,
        "agreed_share": round(agreed / n_frames, 4) if n_frames else float("nan"),
    }  # fmt: skip


def runs_of(values: list, n: int) -> tuple[list[int], list[bool]]:
    """Runs and agreement of one plain sequence of predictions (``None``: no prediction), for callers without a
    score output (the video evaluation)."""
    df = pd.DataFrame({"source_uri": "v", "frame_index": np.arange(len(values)), "timestamp_s": np.arange(len(values)),
                       "pred": pd.Series(values, dtype=object)})  # fmt: skip
    out = agreement(df, "pred", n)
    return out["pred_run"].tolist(), out["pred_agreed"].tolist()
