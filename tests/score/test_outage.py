"""A store outage is not a bad input: reads and writes retry, and what still fails stays pending for a rerun.

These tests stop and restart a second, private SeaweedFS server (the session's server stays up for the others).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from jobs.common import storage, transient
from jobs.common.config import DecodeConfig
from jobs.common.s3server import EmbeddedS3, _free_port
from jobs.score.ingest import PENDING, Decoder
from jobs.score.output import Writer

N_IMAGES = 4


@pytest.fixture(scope="module")
def _private_store(tmp_path_factory):
    """A private S3 server with ``N_IMAGES`` small images, for the whole module (starting one takes seconds)."""
    server = EmbeddedS3(home=tmp_path_factory.mktemp("store"), port=_free_port())
    env = server.up().env() | {"AWS_MAX_ATTEMPTS": "1"}  # no SDK retries under ours: a refused request fails fast
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        storage.ensure_bucket("s3://flaky")
        uris = []
        for i in range(N_IMAGES):
            buf = io.BytesIO()
            Image.fromarray(np.full((24 + i, 32, 3), 40 * i, np.uint8)).save(buf, format="PNG")
            uri = f"s3://flaky/in/img_{i}.png"
            storage.write_bytes(uri, buf.getvalue())
            uris.append(uri)
        yield server, uris, env
    server.down()


@pytest.fixture
def flaky_store(_private_store, monkeypatch):
    """The private server, up at the start of every test (a test may leave it down), its variables set."""
    server, uris, env = _private_store
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    server.up()
    return server, uris


def _rows(decoder: Decoder, uris: list[str]) -> list[dict]:
    batch = {"uri": np.array(uris), "size": np.array([-1] * len(uris)), "kind": np.array(["image"] * len(uris))}
    batch["skip"] = np.array([""] * len(uris))
    return [{k: v[i] for k, v in block.items()} for block in decoder(batch) for i in range(len(block["source_uri"]))]


def test_a_read_during_an_outage_is_pending_not_dead(flaky_store):
    server, uris = flaky_store
    server.down()
    rows = _rows(Decoder(DecodeConfig(), keep_pixels=False, retry=transient.RetryPolicy(budget_s=1.0)), uris[:2])
    assert [r["_pending"] for r in rows] == [True, True] and not any(r["_dead"] or r["_last"] for r in rows)
    assert {r["error_code"] for r in rows} == {PENDING} and "store unavailable" in rows[0]["error"]


def test_a_read_rides_out_a_restart_of_the_store(flaky_store):
    server, uris = flaky_store
    server.down()
    restart = threading.Timer(2.0, server.up)
    restart.start()
    started = time.monotonic()
    rows = _rows(Decoder(DecodeConfig(), keep_pixels=False, retry=transient.RetryPolicy(budget_s=60.0)), uris)
    restart.join()
    assert time.monotonic() - started >= 2.0  # it did wait for the store
    assert [r["error_code"] for r in rows] == [""] * N_IMAGES and all(r["_last"] for r in rows)
    assert [int(r["height"]) for r in rows] == [24 + i for i in range(N_IMAGES)]


def test_the_writer_commits_nothing_of_pending_rows_and_retries_its_writes(flaky_store, tmp_path):
    server, uris = flaky_store
    decoder = Decoder(DecodeConfig(), keep_pixels=False)
    good = next(decoder({"uri": np.array(uris[:1]), "size": np.array([-1]), "kind": np.array(["image"]),
                         "skip": np.array([""])}))  # fmt: skip
    server.down()
    pending = next(Decoder(DecodeConfig(), keep_pixels=False, retry=transient.RetryPolicy(budget_s=0.5))(
        {"uri": np.array(uris[1:2]), "size": np.array([-1]), "kind": np.array(["image"]), "skip": np.array([""])}
    ))  # fmt: skip
    batch = {k: np.concatenate([good[k], pending[k]]) for k in good}
    local = Writer(str(tmp_path / "out"))(batch)
    assert int(local["rows"][0]) == 1 and int(local["pending"][0]) == 1 and str(local["pending_sources"][0]) == uris[1]
    with pytest.raises(transient.TransientError, match="store unavailable"):
        Writer("s3://flaky/out", retry=transient.RetryPolicy(budget_s=0.5))(good)
    threading.Timer(1.5, server.up).start()
    summary = Writer("s3://flaky/out", retry=transient.RetryPolicy(budget_s=60.0))(good)
    assert int(summary["rows"][0]) == 1 and storage.exists(f"s3://flaky/out/_commits/{summary['file'][0]}.parquet")


@pytest.mark.slow
def test_score_ends_non_zero_with_inputs_pending_and_the_rerun_does_them(flaky_store, tmp_path):
    """`mediascore score` as a user runs it: the store goes down after listing; the run leaves every input pending
    (exit 3, nothing dead-lettered); the same command after the store is back completes them, exactly once."""
    import pandas as pd

    server, uris = flaky_store
    manifest = tmp_path / "inputs.parquet"
    pd.DataFrame({"uri": uris}).to_parquet(manifest)  # local: listing it needs no store
    config = tmp_path / "score.yaml"
    config.write_text("retry: {budget_s: 2}\nray: {num_cpus: 2}\nstages: {run: [quality]}\n")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "jobs.cli", "score", "--input", str(manifest), "--output", str(out),
               "--config", str(config)]  # fmt: skip
    server.down()
    first = subprocess.run(command, capture_output=True, text=True, env=os.environ, timeout=600)
    assert first.returncode == 3, first.stderr[-2000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["pending"] == N_IMAGES and summary["dead_letter"] == 0 and summary["rows_written"] == 0
    server.up()
    second = subprocess.run(command, capture_output=True, text=True, env=os.environ, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["pending"] == 0 and summary["dead_letter"] == 0 and summary["rows_written"] == N_IMAGES
    rows = pd.read_parquet(out / "rows")
    assert sorted(rows.source_uri) == sorted(uris) and not rows.duplicated(["source_uri", "frame_index"]).any()


def test_a_large_video_read_in_ranges_rides_out_a_restart_mid_stream(flaky_store, monkeypatch):
    """Videos over ``IN_MEMORY_VIDEO_BYTES`` are decoded from ranged reads; the limit is lowered so that a small
    video takes that path. The store goes down after the first sampled frame, while the decoder still has to seek
    and read, and comes back 2 s later: every frame arrives and nothing is an error."""
    from jobs.common.config import VideoSampling
    from jobs.media.videoenc import encode_frames
    from jobs.score import ingest

    server, _ = flaky_store
    rng = np.random.default_rng(3)
    frames = (rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(200))
    data = encode_frames(frames, "mp4", "mpeg4", fps=25, gop=25, size=(128, 96))
    assert len(data) > 1 << 20  # more than PyAV's read buffer: decoding has to read again later
    uri = "s3://flaky/in/clip.mp4"
    storage.write_bytes(uri, data)
    monkeypatch.setattr(ingest, "IN_MEMORY_VIDEO_BYTES", 1)
    cfg = DecodeConfig(video=VideoSampling(policy="interval", interval_s=3.0))
    rows = Decoder(cfg, keep_pixels=False, retry=transient.RetryPolicy(budget_s=60.0)).rows_for(uri, len(data), "video")
    first = next(rows)
    server.down()
    stopped = time.monotonic()
    restart = threading.Timer(2.0, server.up)
    restart.start()
    rest = list(rows)
    restart.join()
    assert time.monotonic() - stopped >= 2.0  # the reads after the first frame waited for the store
    assert [r["frame_index"] for r in [first, *rest]] == [0, 75, 150]
    assert all(r["error_code"] == "" for r in rest) and rest[-1]["_last"]
