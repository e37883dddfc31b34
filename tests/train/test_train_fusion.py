"""The fusion training job end to end: features from a real `score` run, the Parquet cache, Ray Train, checkpoints
in the real S3 server, resume, and `mediascore eval fusion`."""

import dataclasses

import numpy as np
import pytest

from jobs.common import storage
from jobs.common.config import ConfigError
from jobs.common.storage import read_json
from jobs.eval.fusion import aggregate, run_eval_fusion, top_modality, weight_margin, weight_on_cause
from jobs.train.fusion import build_cache, frame_batch, load_cache, load_fusion_settings, predict
from jobs.train.metrics import auroc, binary_metrics, operating_threshold
from models.checkpoint import build_from_checkpoint, load_checkpoint
from models.fusion_recipe import FusionRecipe, FusionTrainConfig


def test_training_beats_chance_on_held_out_images(fusion_trained):
    settings, best, _ = fusion_trained
    summary = read_json(storage.join(settings.data.cache, "_done.json"))
    assert summary["rows"] == 108 and 0 < summary["positives"] < 108
    frame = load_cache(settings.data.cache, settings.data.test_splits)
    test = frame_batch(frame, summary["specs"])
    model, ckpt = build_from_checkpoint(storage.read_bytes(best["checkpoint"]))
    scored = predict(FusionRecipe(model, FusionTrainConfig()), test, "cpu")
    metrics = binary_metrics(test["label"], scored["prob"])
    assert metrics["auroc"] > 0.6, metrics
    assert ckpt["builder"] == "fusion" and ckpt["data"]["classes"] == ["safe", "risky"]
    assert ckpt["config"]["modalities"] == ["text", "style", "object", "key"]
    assert len(ckpt["data"]["manifest_sha1"]) == 40 and ckpt["extra"]["best_loss"] == best["metrics"]["val_loss"]


def test_checkpoints_history_and_resume(fusion_trained):
    settings, best, history = fusion_trained
    assert [h["epoch"] for h in history] == list(range(8))
    again = read_json(storage.join(settings.output, "history.json"))
    assert [h["epoch"] for h in again] == list(range(8))  # the rerun resumed after the last epoch
    assert best["metrics"]["val_loss"] == min(h["val_loss"] for h in history)
    latest = read_json(storage.join(settings.output, "latest.json"))
    ckpt = load_checkpoint(storage.read_bytes(latest["checkpoint"]))
    assert ckpt["epoch"] == 7 and ckpt["optimizer"]["optimizer"]["state"]
    for h in history:
        assert {"train_l1", "train_l2", "train_l3", "val_loss", "val_auroc"} <= set(h)
        assert h["train_l3"] > 0  # the key module's auxiliary head is trained
        assert 0 <= h["val_threshold"] <= 1 and {"val_precision", "val_recall"} <= set(h)
    assert ckpt["data"]["threshold"] == history[7]["val_threshold"]  # each checkpoint carries its operating point


@pytest.mark.slow  # trains every ablation variant: about 3.5 minutes on 2 cores
def test_eval_fusion_reports_every_key(fusion_trained):
    settings, _, _ = fusion_trained
    result = run_eval_fusion(settings, ablations=("text", "no_weights"))
    for key in ("auroc", "accuracy", "f1", "auroc_no_weights", "weight_on_cause", "threshold", "precision", "recall"):
        assert 0 <= result[key] <= 1, key
    assert set(result["auroc_by_modality"]) == {"text"} and result["seeds"] == [settings.seed]
    assert -1 <= result["weight_margin"] <= 1 and result["auroc_std"] is None
    assert set(result["auroc_by_image_type"]) <= {"photo", "sketch", "cartoon"}
    assert read_json(storage.join(settings.output, "ablations/text/best.json"))


def test_a_cache_made_for_another_model_is_refused(fusion_trained):
    settings, _, _ = fusion_trained
    other = settings.model_copy(update={"model": dataclasses.replace(settings.model, map_side=2)})
    with pytest.raises(ValueError, match="another model"):
        build_cache(other)  # its pooled maps are 4x4: read as 2x2 they would be garbage
    unfrozen = settings.model_copy(update={"model": dataclasses.replace(settings.model, freeze_upstream=False)})
    with pytest.raises(ValueError, match="freeze_upstream"):
        build_cache(unfrozen)  # maps cannot train the upstream: it needs the pixels


def test_auroc_and_metrics_by_hand():
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert auroc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)  # ties count half
    assert np.isnan(auroc(np.array([1, 1]), np.array([0.1, 0.2])))
    m = binary_metrics(np.array([0, 1, 1, 0]), np.array([0.2, 0.9, 0.4, 0.6]))
    assert m["accuracy"] == 0.5 and m["f1"] == pytest.approx(0.5)
    assert m["precision"] == 0.5 and m["recall"] == 0.5
    m = binary_metrics(np.array([0, 1, 1, 0]), np.array([0.2, 0.9, 0.4, 0.6]), threshold=0.7)
    assert m["precision"] == 1.0 and m["recall"] == 0.5


def test_operating_threshold_at_a_target_precision():
    labels = np.array([0, 0, 1, 0, 1, 1, 1])
    probs = np.array([0.1, 0.3, 0.35, 0.6, 0.7, 0.8, 0.9])
    assert operating_threshold(labels, probs, 0.9) == 0.7  # 3 of 3 above it; at 0.6 precision falls to 0.75
    assert operating_threshold(labels, probs, 0.75) == 0.35  # the lowest that reaches it: the most recall
    assert operating_threshold(labels, probs, None) == 0.35  # best F1 (0.889)
    reversed_labels = 1 - labels  # the top score is a negative: precision 0.9 is out of reach -> best F1
    assert operating_threshold(reversed_labels, probs, 0.9) == 0.1
    assert operating_threshold(np.ones(3), probs[:3], 0.9) == 0.5  # one class: no curve


def test_seeds_aggregate_to_means_and_sample_stds():
    runs = [{"auroc": 0.9, "by": {"a": 1.0, "b": None}, "name": "x"}, {"auroc": 0.96, "by": {"a": 0.5, "b": None}}]
    out = aggregate(runs)
    assert out["auroc"] == pytest.approx(0.93) and out["auroc_std"] == pytest.approx(0.0424, abs=1e-4)
    assert out["by"] == {"a": 0.75, "b": None} and out["by_std"]["a"] == pytest.approx(0.3536, abs=1e-4)
    assert out["name"] == "x" and "name_std" not in out
    assert aggregate(runs[:1])["auroc_std"] is None  # one seed has no spread


def test_weight_margin_of_the_cause_over_the_rest():
    weights = np.array([[0.9, 0.2, 0.1, 0.95], [0.1, 0.8, 0.3, 0.0], [0.5, 0.5, 0.5, 0.5]])
    mask = np.array([[True, True, True, False], [False, True, True, True], [True, True, True, True]])
    kinds = np.array([[0, 1, 2, 3], [0, 1, 2, 4], [0, 1, 2, 3]])  # text, style, key, face / body
    causes, labels = np.array(["text", "object", "style"]), np.array([1, 1, 0])
    # text: 0.9 - 0.2; object (the body at 0.0): 0.0 - 0.8; the third row is safe and does not count
    assert weight_margin(weights, mask, kinds, causes, labels) == pytest.approx((0.7 - 0.8) / 2)


def test_weight_on_cause_uses_the_largest_present_weight():
    weights = np.array([[0.9, 0.2, 0.1, 0.95], [0.1, 0.8, 0.3, 0.0]])
    mask = np.array([[True, True, True, False], [False, True, True, True]])
    kinds = np.array([[0, 1, 2, 3], [0, 1, 2, 4]])  # text, style, key, face / body
    tops = top_modality(weights, mask, kinds)
    assert tops == ["text", "style"]  # the masked face (0.95) does not count
    share, by_cause = weight_on_cause(np.array(["text", "region"]), np.array([1, 1]), tops)
    assert share == 0.5 and by_cause == {"region": 0.0, "text": 1.0}


def test_config_names_bad_keys(tmp_path):
    path = tmp_path / "f.yaml"
    base = "data: {manifest: m, features: f, cache: c, cam_checkpoint: k}\noutput: o\n"
    path.write_text(base + "model: {modalities: [text, audio]}\n")
    with pytest.raises(ConfigError, match="modalities"):
        load_fusion_settings(path)
    path.write_text(base + "train: {l4: 1.0}\n")
    with pytest.raises(ConfigError, match="l4"):
        load_fusion_settings(path)
    assert load_fusion_settings("configs/train_fusion.yaml").model.use_weights is True
