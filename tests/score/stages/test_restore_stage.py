"""The restore stage in a real `score` run over a corpus in S3, with the generator the training fixture made."""

import pandas as pd
import pytest

from jobs.common import storage
from jobs.common.config import load_config
from jobs.score.pipeline import run_score
from jobs.score.stages.restore import restored_name
from jobs.train.restore import paths


@pytest.fixture(scope="module")
def restored_rows(restore_trained, corpus):
    settings, _ = restore_trained
    corpus_uri, _ = corpus
    cfg = load_config(
        overrides={
            "stages": {
                "run": ["restore"],
                "restore": {
                    "checkpoint": paths(settings.output)["generator"],
                    "threshold": 100,
                    "tile": 64,
                    "gate": False,
                },
            }
        }
    )
    output = "s3://test-restore/score"
    run_score(corpus_uri, output, cfg, echo=lambda _: None)
    fs, path = storage.resolve(storage.join(output, "rows"))
    return output, pd.read_parquet(path, filesystem=fs)


def test_every_decoded_frame_is_judged_restored_and_stored(restored_rows):
    output, rows = restored_rows
    alive = rows[rows.width > 0]
    assert len(alive) > 0 and alive.restore_applied.all()  # quality numbers top out at 80: all below 100
    assert not alive.restore_rejected.any()  # the gate is off
    assert alive.restore_quality_before.between(0, 100).all()
    assert alive.restore_quality_after.between(0, 100).all()
    for r in alive.itertuples():
        assert r.restore_uri.startswith(storage.join(output, "restored"))
        assert storage.exists(r.restore_uri)
    assert alive.restore_uri.is_unique  # one file per (source, frame)
    assert (alive.media_type == "video").any()


def test_the_gate_keeps_a_restored_frame_only_when_the_judge_rates_it_higher(restore_trained, corpus):
    settings, _ = restore_trained
    corpus_uri, _ = corpus
    restore = {"checkpoint": paths(settings.output)["generator"], "threshold": 100, "tile": 64, "gate_margin": 0.0}
    output = "s3://test-restore/score-gated"
    cfg = load_config(overrides={"stages": {"run": ["restore"], "restore": restore}})
    run_score(storage.join(corpus_uri, "images/test/"), output, cfg, echo=lambda _: None)
    fs, path = storage.resolve(storage.join(output, "rows"))
    rows = pd.read_parquet(path, filesystem=fs)
    alive = rows[rows.width > 0]
    assert len(alive) and (alive.restore_applied != alive.restore_rejected).all()  # every one tried: kept or not
    applied, rejected = alive[alive.restore_applied], alive[alive.restore_rejected]
    assert (applied.restore_quality_after >= applied.restore_quality_before).all()
    assert applied.restore_uri.map(storage.exists).all()
    assert (
        rejected.restore_quality_after < rejected.restore_quality_before
    ).all() and rejected.restore_uri.isna().all()


def test_the_gate_off_keeps_every_restored_frame_and_a_margin_asks_for_more():
    from jobs.common.config import RestoreStageConfig
    from jobs.score.stages.restore import gate_accepts

    assert gate_accepts(50.0, 40.0, RestoreStageConfig(gate=False))
    assert not gate_accepts(50.0, 50.5, RestoreStageConfig(gate_margin=1.0))
    assert gate_accepts(50.0, 51.0, RestoreStageConfig(gate_margin=1.0))


def test_frames_at_or_above_the_threshold_are_left_alone(restore_trained, corpus):
    settings, _ = restore_trained
    corpus_uri, _ = corpus
    restore = {"checkpoint": paths(settings.output)["generator"], "threshold": 0}
    cfg = load_config(overrides={"stages": {"run": ["restore"], "restore": restore}})
    output = "s3://test-restore/score-none"
    run_score(storage.join(corpus_uri, "images/test/"), output, cfg, echo=lambda _: None)
    fs, path = storage.resolve(storage.join(output, "rows"))
    rows = pd.read_parquet(path, filesystem=fs)
    assert len(rows) and not rows.restore_applied.any() and not rows.restore_rejected.any()
    assert rows.restore_uri.isna().all() and rows.restore_quality_after.isna().all()


def test_restored_names_are_stable_per_source_and_frame():
    a = restored_name("s3://b/v.mp4", 3, "png")
    assert a == restored_name("s3://b/v.mp4", 3, "png") and a.endswith("_f000003.png")
    assert a != restored_name("s3://b/v.mp4", 4, "png")
    assert restored_name("s3://b/i.jpg", -1, "jpeg").endswith(".jpg")
