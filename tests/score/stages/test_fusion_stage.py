"""The fusion stage in a real `score` run over the risk corpus, with the checkpoint the training fixture made."""

import math

import pandas as pd
import pytest

from jobs.common import storage
from jobs.common.config import ConfigError, load_config
from jobs.score.pipeline import run_score
from jobs.score.stages.fusion import FusionStage, modality_weights
from models.checkpoint import load_checkpoint


def test_fusion_stage_in_a_score_run(fusion_trained):
    settings, best, _ = fusion_trained
    corpus = settings.data.manifest.rsplit("/", 1)[0]
    cfg = load_config(
        "configs/fusion_features.yaml",
        overrides={
            "stages": {"run": ["ocr", "text_embed", "objects", "fusion"], "fusion": {"checkpoint": best["checkpoint"]}}
        },
    )
    output = "s3://test-fusion/score"
    run_score(storage.join(corpus, "images/test/"), output, cfg, echo=lambda _: None)
    fs, path = storage.resolve(storage.join(output, "rows"))
    rows = pd.read_parquet(path, filesystem=fs)
    assert len(rows) > 0 and rows.error.isna().all()
    assert rows.fusion_score.between(0, 1).all()
    assert set(rows.fusion_class) <= {"safe", "risky"}
    threshold = load_checkpoint(storage.read_bytes(best["checkpoint"]))["data"]["threshold"]
    assert threshold == best["metrics"]["val_threshold"]  # the operating point chosen on the validation split
    assert ((rows.fusion_score >= threshold) == (rows.fusion_class == "risky")).all()
    for r in rows.itertuples():
        w = r.fusion_weights
        assert set(w) == {"text", "style", "object", "key"}
        assert 0 < w["style"] < 1 and 0 < w["key"] < 1  # always present
        assert (w["text"] is None) == (not r.text_token_count)  # text weight only when there is text
        assert (w["object"] is None) == (r.obj_count == 0 or not set(r.obj_labels) & {"face", "person"})
        x0, y0, x1, y1 = r.fusion_key_box
        assert 0 <= x0 < x1 <= r.width and 0 <= y0 < y1 <= r.height
        assert r.fusion_model.startswith(best["checkpoint"])


def test_threshold_in_config_overrides_the_checkpoints(fusion_trained):
    _, best, _ = fusion_trained
    cfg = load_config(None, {"stages": {"fusion": {"checkpoint": best["checkpoint"]}}}).stages.fusion
    assert FusionStage(cfg).threshold == best["metrics"]["val_threshold"]
    assert FusionStage(cfg.model_copy(update={"threshold": 0.8})).threshold == 0.8


def test_modality_weights_takes_the_largest_object_weight():
    out = modality_weights([0.3, 0.6, 0.5, 0.2, 0.9], [False, True, True, True, True], [0, 1, 2, 3, 4])
    assert out["text"] is None and out["style"] == pytest.approx(0.6) and out["key"] == pytest.approx(0.5)
    assert out["object"] == pytest.approx(0.9)
    assert not any(isinstance(v, float) and math.isnan(v) for v in out.values())


def test_fusion_needs_text_and_objects_before_it():
    with pytest.raises(ConfigError, match="fusion reads"):
        load_config(overrides={"stages": {"run": ["ocr", "text_embed", "fusion", "objects"]}})
