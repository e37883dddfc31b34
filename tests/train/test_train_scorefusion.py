"""`mediascore train scorefusion` end to end on a small multi-modal set in the real S3 server: a 2D and a 3D
(clip) network on Ray Train over the folds, a bad file and a missing modality, weights from out-of-fold scores
only, resume by fold, and the test split scored from the checkpoint."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from conftest import write_table

from jobs.common import storage
from jobs.eval.scorefusion import score_test_split, seed_figures
from jobs.media.scorefusion import ScoreFusionScorer
from jobs.train.scorefusion import fold_uri, network_uri, run_train_scorefusion
from models.checkpoint import load_checkpoint


def test_both_networks_train_and_the_weights_come_from_out_of_fold_scores_only(scorefusion_run):
    settings, record, _, train_ids, (broken, lacking), _ = scorefusion_run
    assert record["unreadable"] == {"infrared": 0, "clip": 1}  # the garbage clip; no test file was ever opened
    oof = pd.read_parquet(io.BytesIO(storage.read_bytes(storage.join(settings.output, "oof.parquet"))))
    assert sorted(oof.sample_id) == train_ids  # grouped by sample: one row each, test samples absent
    by_id = oof.set_index("sample_id")
    assert np.isnan(by_id["clip"][broken]) and np.isnan(by_id["clip"][lacking]) and not by_id["infrared"].isna().any()
    assert record["samples"] == len(train_ids) - 2 and record["fitted_on"] == "out_of_fold"
    assert sum(record["weights"]) == pytest.approx(1) and record["method"] == "grid"
    ckpt = load_checkpoint(storage.read_bytes(storage.join(settings.output, "scorefusion.pt")))
    assert ckpt["builder"] == "scorefusion" and ckpt["data"]["removal"] == {"infrared": "none", "clip": "frame_code"}
    assert [m["init"] for m in ckpt["config"]["modalities"]] == ["imagenet", "inflate"]


def _mark_fold(settings, name: str, fold: int) -> str:
    """Overwrite a fold's record with a recognisable score: a retrained fold would replace it."""
    uri = fold_uri(settings, name, fold)
    write_table(uri, pd.read_parquet(io.BytesIO(storage.read_bytes(uri))).assign(score=0.123))
    return uri


def _marked(uri: str) -> bool:
    return bool((pd.read_parquet(io.BytesIO(storage.read_bytes(uri))).score == 0.123).all())


def test_a_rerun_of_a_finished_run_trains_nothing_again(scorefusion_run):
    settings, *_ = scorefusion_run
    kept = _mark_fold(settings, "infrared", 0)
    networks = {n: storage.read_bytes(network_uri(settings, n)) for n in ("infrared", "clip")}
    record = run_train_scorefusion(settings)
    assert _marked(kept) and all(storage.read_bytes(network_uri(settings, n)) == b for n, b in networks.items())
    assert record["samples"] > 0  # the weights were fitted again, on the out-of-fold records as they stand


@pytest.mark.slow  # one more Ray Train run: about 30 s on 2 cores
def test_a_rerun_redoes_only_the_missing_fold(scorefusion_run):
    settings, *_ = scorefusion_run
    kept, redo = _mark_fold(settings, "infrared", 0), fold_uri(settings, "infrared", 1)
    network = storage.read_bytes(network_uri(settings, "clip"))
    storage.delete(redo)
    run_train_scorefusion(settings)
    assert _marked(kept) and storage.exists(redo) and not _marked(redo)
    assert storage.read_bytes(network_uri(settings, "clip")) == network


def test_the_checkpoint_scores_the_test_split_and_handles_a_missing_modality(scorefusion_run):
    settings, record, manifest, *_, real = scorefusion_run
    run = settings.model_copy(update={"data": settings.data.model_copy(update={"manifest": real})})
    checkpoint = storage.join(settings.output, "scorefusion.pt")
    table = score_test_split(run, checkpoint)
    assert len(table) == manifest[manifest.split == "test"].sample_id.nunique() and not table.isna().any().any()
    figures = seed_figures(run, record, table)
    assert 0 <= figures["auroc_fitted"] <= 1 and set(figures["auroc_by_modality"]) == {"infrared", "clip"}
    scorer = ScoreFusionScorer(checkpoint)
    sample = manifest[manifest.sample_id == table.sample_id[0]].set_index("modality").uri
    files = {m: (storage.read_bytes(u), u) for m, u in sample.items()}
    full, alone = scorer.score_samples([files, {"infrared": files["infrared"]}])
    assert set(full.sf_scores) == {"infrared", "clip"} and full.sf_missing == [] and full.sf_class is not None
    assert alone.sf_missing == ["clip"] and alone.sf_weights == {"infrared": 1.0}
    assert alone.sf_score == pytest.approx(full.sf_scores["infrared"])
    dropped = ScoreFusionScorer(checkpoint, missing="drop").score_samples([{"infrared": files["infrared"]}])[0]
    assert dropped.sf_score is None and "clip" in dropped.error
