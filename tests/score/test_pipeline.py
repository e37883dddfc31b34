import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from jobs.common import storage
from jobs.common.config import load_config
from jobs.score.ingest import Decoder, list_inputs
from jobs.score.output import output_schema
from jobs.score.pipeline import OutputConflict, run_score
from jobs.score.stages.quality import QualityStage

BROKEN_REASONS = {
    "empty": "empty_object",
    "truncated_jpeg": "image_truncated",
    "truncated_mp4": "video_open_error",
    "video_named_jpg": "media_type_mismatch",
    "too_many_pixels": "image_too_large",
}


def _read(uri: str, folder: str) -> pd.DataFrame:
    fs, path = storage.resolve(storage.join(uri, folder))
    return pd.read_parquet(path, filesystem=fs)


def _expected_keys(corpus_uri: str, cfg) -> set[tuple[str, int]]:
    """(source, frame_index) of every row, from the Ray-free decoder (itself checked against ground truth)."""
    decoder = Decoder(cfg.decode, keep_pixels=False)
    keys = set()
    for m in list_inputs(corpus_uri, cfg.listing).media:
        for row in decoder.rows_for(m.uri, m.size, m.kind):
            if not row["_dead"]:
                keys.add((m.uri, int(row["frame_index"])))
    return keys


def _check_exactly_once(out: str, corpus_uri: str, manifest: pd.DataFrame, cfg) -> pd.DataFrame:
    rows, dead = _read(out, "rows"), _read(out, "dead_letter")
    counts = collections.Counter(zip(rows.source_uri, rows.frame_index, strict=True))
    assert max(counts.values()) == 1, [k for k, c in counts.items() if c > 1][:5]
    assert set(counts) == _expected_keys(corpus_uri, cfg)
    assert set(rows.source_uri).isdisjoint(dead.source_uri)
    assert set(rows.source_uri) | set(dead.source_uri) == set(manifest.uri)
    assert len(dead) == dead.source_uri.nunique()
    return rows


def test_score_writes_every_input_exactly_once_and_resumes_to_a_no_op(ray_local, corpus, tmp_path):
    corpus_uri, manifest = corpus
    cfg = load_config("configs/demo.yaml")
    out = "s3://test-scores/full"
    summary = run_score(corpus_uri, out, cfg, echo=lambda s: None)
    rows = _check_exactly_once(out, corpus_uri, manifest, cfg)
    for obj in storage.list_objects(storage.join(out, "rows")):
        fs, path = storage.resolve(obj.uri)
        assert pq.read_schema(path, filesystem=fs).equals(output_schema())
    good = rows[rows.error.isna()]
    for column in QualityStage.columns:
        assert good[column].notna().all(), column
    images = manifest[(manifest.media_type == "image") & manifest.broken.isna()]
    assert (rows[rows.media_type == "image"].frame_index == 0).all()
    assert rows[rows.media_type == "image"].timestamp_s.isna().all()
    sizes = dict(zip(images.uri, zip(images.width, images.height, strict=True), strict=True))
    for r in rows[rows.media_type == "image"].itertuples():
        assert (r.width, r.height) == sizes[r.source_uri]
    dead = _read(out, "dead_letter")
    reasons = dict(zip(dead.source_uri, dead.error_code, strict=True))
    for uri, kind in zip(manifest.uri, manifest.broken, strict=True):
        if isinstance(kind, str):
            assert reasons[uri] == BROKEN_REASONS[kind]
    assert (dead.error.str.len() > 0).all()

    assert summary.rows_written == len(rows) and summary.dead_letter == len(dead)
    assert summary.images == len(images) and summary.skipped_non_media >= 3
    assert summary.errors_by_reason == dict(collections.Counter(dead.error_code))
    manifest_out = json.loads(storage.read_bytes(storage.join(out, "_manifest.json")))
    assert sum(f["num_rows"] for f in manifest_out["rows"]) == len(rows)
    listed = {o.uri.rsplit("/", 2)[-2] + "/" + o.uri.rsplit("/", 1)[-1] for o in storage.list_objects(out)}
    assert {f["path"] for f in manifest_out["rows"] + manifest_out["dead_letter"]} == {
        p for p in listed if p.startswith(("rows/", "dead_letter/"))
    }

    again = run_score(corpus_uri, out, cfg, echo=lambda s: None)
    assert again.processed_this_run == 0 and again.already_complete == len(manifest)
    assert again.rows_written == summary.rows_written
    with pytest.raises(OutputConflict):
        run_score(corpus_uri, out, cfg, stages=[], echo=lambda s: None)


def test_inventory_run_has_metadata_but_no_stage_values(ray_local, corpus):
    corpus_uri, manifest = corpus
    cfg = load_config("configs/demo.yaml")
    out = "s3://test-scores/inventory"
    run_score(corpus_uri, out, cfg, stages=[], echo=lambda s: None)
    rows = _check_exactly_once(out, corpus_uri, manifest, cfg)
    for column in QualityStage.columns:
        assert rows[column].isna().all()
    videos = rows[rows.media_type == "video"]
    assert (videos.width > 0).all() and videos.timestamp_s.notna().all()


def _commits(out: str) -> int:
    return len(list(storage.list_objects(storage.join(out, "_commits"))))


def test_resume_after_the_job_is_killed_gives_exactly_once(ray_local, corpus, tmp_path):
    corpus_uri, manifest = corpus
    config = tmp_path / "slow.yaml"
    config.write_text(
        "decode:\n  video:\n    policy: all\n    max_frames: 1000\n  resources:\n    batch_size: 1\n"
        "output:\n  rows_per_file: 4\nray:\n  num_cpus: 2\n"
    )
    out = "s3://test-scores/killed"
    cmd = [sys.executable, "-m", "jobs.cli", "score", "--input", corpus_uri, "--output", out, "--config", str(config)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while _commits(out) < 6 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, "the job finished before it could be interrupted"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not storage.exists(storage.join(out, "_manifest.json"))
    written = _commits(out)
    cfg = load_config(config)
    summary = run_score(corpus_uri, out, cfg, echo=lambda s: None)
    assert 0 < summary.already_complete < len(manifest), written
    rows = _check_exactly_once(out, corpus_uri, manifest, cfg)
    videos = manifest[(manifest.media_type == "video") & manifest.broken.isna()]
    assert len(rows[rows.media_type == "video"]) == int(np.sum(videos.num_frames))


@pytest.mark.slow  # starts its own Ray cluster with `ray start`: about 1 minute on 2 cores
def test_score_on_an_existing_cluster_hands_the_s3_settings_to_its_workers(corpus, free_port):
    """The cluster is started without any AWS variable: its workers can read S3 only through the job's runtime
    environment."""
    corpus_uri, manifest = corpus
    port = free_port
    no_token = {"RAY_AUTH_MODE": "disabled"}  # a throwaway cluster on loopback
    bare = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **no_token}
    ray_cli = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--block"],
        env=bare, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    out = "s3://test-scores/on-cluster"
    try:
        deadline = time.monotonic() + 60
        status = [ray_cli, "status", f"--address=127.0.0.1:{port}"]
        while subprocess.run(status, env=bare, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "the cluster did not come up"
            time.sleep(1)
        result = subprocess.run(
            [sys.executable, "-m", "jobs.cli", "score", "--input", corpus_uri, "--output", out, "--address",
             f"127.0.0.1:{port}", "--config", "configs/demo.yaml"],
            env={**os.environ, **no_token}, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
    assert result.returncode == 0, result.stderr[-3000:]
    _check_exactly_once(out, corpus_uri, manifest, load_config("configs/demo.yaml"))


def test_every_legal_key_is_scored_once_with_its_exact_uri_and_resumed(ray_local, put_tricky_images):
    """Keys with spaces, ``# + % ? & = ; @ : , ' "``, ``%20``, unicode and deep prefixes, on the real server."""
    sizes = put_tricky_images("s3://test-keys/in")
    cfg = load_config("configs/demo.yaml", overrides={"output": {"rows_per_file": 4}})
    out = "s3://test-scores/tricky-keys"
    summary = run_score("s3://test-keys/in", out, cfg, stages=["quality"], echo=lambda s: None)
    assert (summary.media_objects, summary.dead_letter, summary.errors_by_reason) == (len(sizes), 0, {})
    assert not list(storage.list_objects(storage.join(out, "dead_letter")))
    rows = _read(out, "rows")
    assert sorted(rows.source_uri) == sorted(sizes)  # each key once, character for character
    assert {r.source_uri: (r.width, r.height) for r in rows.itertuples()} == sizes  # each read from its own object
    assert rows.error.isna().all() and rows[list(QualityStage.columns)].notna().all().all()

    commits = sorted(o.uri for o in storage.list_objects(storage.join(out, "_commits")))
    assert len(commits) > 1
    fs, path = storage.resolve(commits[0])
    redo = set(pq.read_table(path, filesystem=fs).column("source_uri").to_pylist())
    storage.delete(commits[0])  # as if the run had died before this batch committed
    resumed = run_score("s3://test-keys/in", out, cfg, stages=["quality"], echo=lambda s: None)
    assert (resumed.processed_this_run, resumed.already_complete) == (len(redo), len(sizes) - len(redo))
    again = run_score("s3://test-keys/in", out, cfg, stages=["quality"], echo=lambda s: None)
    assert (again.processed_this_run, again.already_complete) == (0, len(sizes))
    assert sorted(_read(out, "rows").source_uri) == sorted(sizes)  # no duplicate, no loss
