"""`mediascore eval multitype` on the test corpus with a tiny network, and its measuring pieces on known data."""

import json
import subprocess
import sys

import numpy as np
import pytest

from jobs.eval.multitype import VARIANTS, cosine_distances, goals, type_probe, variant_settings
from jobs.train.cam import load_train_settings


def test_each_variant_changes_only_what_it_names():
    base = load_train_settings("configs/eval_multitype.yaml")
    ratio = {"photo": 5, "sketch": 1, "cartoon": 1}
    runs = {v: variant_settings(base, v, 2, "s3://b/mt", ratio) for v in VARIANTS}
    assert runs["photo_only"].data.image_types == ["photo"] and runs["photo_only"].data.type_ratio is None
    assert runs["mixed"].data.type_ratio == ratio and runs["mixed"].train.batches.stratify_by is None
    assert runs["stratified"].train.batches.stratify_by == "image_type"
    assert not runs["stratified"].train.adversarial_type.enabled
    assert (
        runs["adversarial"].train.adversarial_type.enabled
        and runs["adversarial"].train.adversarial_type.preset == "production"
    )
    assert {r.output for r in runs.values()} == {f"s3://b/mt/{v}/seed2" for v in VARIANTS}
    assert all(r.seed == 2 and r.train.epochs == base.train.epochs for r in runs.values())  # the same budget
    with pytest.raises(ValueError, match="unknown variant"):
        variant_settings(base, "cyclegan", 0, "s3://b/mt", ratio)


def test_the_type_probe_reads_separable_types_and_not_shuffled_ones():
    rng = np.random.default_rng(0)
    types = np.repeat(["photo", "sketch", "cartoon"], 60)
    offset = {"photo": 0.0, "sketch": 3.0, "cartoon": -3.0}
    feats = rng.normal(size=(180, 8)) + np.array([offset[t] for t in types])[:, None]
    assert type_probe(feats[::2], types[::2], feats[1::2], types[1::2]) > 95
    noise = rng.normal(size=(180, 8))
    assert type_probe(noise[::2], types[::2], noise[1::2], types[1::2]) < 60


def test_cosine_distance_of_renders_of_one_scene_against_different_scenes():
    scenes = np.repeat(np.arange(10), 3)
    types = np.tile(["photo", "sketch", "cartoon"], 10)
    feats = np.eye(10)[scenes] + 0.01 * np.random.default_rng(0).normal(size=(30, 10))
    d = cosine_distances(feats, scenes, types)
    assert d["cosine_same_scene"] < 0.01 and d["cosine_diff_scene"] > 0.9


def test_goals_compare_adversarial_with_mixed():
    result = {
        "mixed": {"worst_type": 60.0, "worst_type_std": 1.0},
        "adversarial": {"worst_type": 65.0, "worst_type_std": 1.5, "type_probe": 40.0,
                        "video": {"frame_accuracy": 70.0, "agreed_accuracy_5": 80.0}},
        "type_probe_chance": 33.33,
    }  # fmt: skip
    g = goals(result)
    assert g["worst_type_gain"] == 5.0 and g["worst_type_gain_met"] and g["type_probe_met"] and g["agreed_gain_5_met"]


@pytest.mark.slow  # about 100 s on 2 cores: two trainings and their scoring through the CLI
def test_eval_multitype_end_to_end(ray_local, corpus, tmp_path):
    corpus_uri, _ = corpus
    config = tmp_path / "mt.yaml"
    config.write_text(
        f"data: {{manifest: {corpus_uri}/manifest.parquet, image_size: 32, val_splits: [val, test]}}\n"
        "output: s3://test-eval/unused\n"
        "model: {arch: tiny, num_classes: 6, width_mult: 0.25}\n"
        "train: {epochs: 1, batch_size: 6, adversarial_type: {preset: production, hidden: 8}}\n"
        "scaling: {num_workers: 1, cpus_per_worker: 1}\nray: {num_cpus: 2}\n"
    )
    cmd = [sys.executable, "-m", "jobs.cli", "eval", "multitype", "--config", str(config), "--output",
           "s3://test-eval/multitype", "--seeds", "0", "--variants", "mixed,adversarial",
           "--video-fps", "10"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result) >= {"mixed", "adversarial", "goals", "seeds", "type_probe_chance"}
    for variant in ("mixed", "adversarial"):
        figures = result[variant]
        assert set(figures) >= {"by_type", "worst_type", "worst_type_std", "type_probe", "video"}
        assert set(figures["by_type"]) == {"photo", "sketch", "cartoon"}
        assert set(figures["video"]) == {"frame_accuracy", "agreed_accuracy_5", "agreed_share_5",
                                         "agreed_accuracy_10", "agreed_share_10"}  # fmt: skip
        assert 0 <= figures["video"]["agreed_share_5"] <= 100 and 0 <= figures["type_probe"] <= 100
    assert result["videos"] > 0 and "worst_type_gain" in result["goals"]
