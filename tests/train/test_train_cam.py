"""The CAM training job on Ray Train, its checkpoints in the real S3 server, resume, and `mediascore eval cam`."""

import json
import subprocess
import sys

import pytest

from jobs.common import storage
from jobs.common.config import ConfigError
from jobs.common.storage import read_json
from jobs.eval.cam import EVAL_KEYS, run_eval_cam
from jobs.train.cam import load_train_settings
from models.checkpoint import build_from_checkpoint, load_checkpoint


def test_checkpoints_history_and_resume(trained):
    output, first = trained
    assert first["epoch"] == 0
    latest = read_json(storage.join(output, "latest.json"))
    assert latest["epoch"] == 1 and latest["checkpoint"].endswith("epoch_0001.pt")
    history = read_json(storage.join(output, "history.json"))
    assert [h["epoch"] for h in history] == [0, 1]  # resumed: epoch 0 was not trained twice
    for h in history:
        assert {"train_loss", "val_top1", "val_maxboxacc_50"} <= set(h)
    ckpt = load_checkpoint(storage.read_bytes(latest["checkpoint"]))
    assert ckpt["builder"] == "cam_net" and ckpt["epoch"] == 1 and ckpt["config"]["insert_after"]
    assert ckpt["data"]["classes"] and ckpt["data"]["image_size"] == 64 and len(ckpt["data"]["manifest_sha1"]) == 40
    model, _ = build_from_checkpoint(ckpt)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_eval_cam_reports_every_key(trained, corpus):
    output, _ = trained
    latest = read_json(storage.join(output, "latest.json"))
    result = run_eval_cam(latest["checkpoint"], split="test", image_types=("photo", "sketch", "cartoon"))
    for key in EVAL_KEYS:
        assert 0 <= result[key] <= 100, key
    cli = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "eval", "cam", "--checkpoint", latest["checkpoint"], "--split", "test",
         "--image-types", "photo,sketch,cartoon", "--by-image-type"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-2000:]
    last = json.loads(cli.stdout.strip().splitlines()[-1])
    assert set(EVAL_KEYS) <= set(last) and last["maxboxacc_50"] == result["maxboxacc_50"]
    by_type = last["by_image_type"]
    assert set(by_type) == {"photo", "sketch", "cartoon"} and all(set(EVAL_KEYS) <= set(v) for v in by_type.values())
    assert sum(v["n"] for v in by_type.values()) == last["n"]  # the types split the same images
    photos = run_eval_cam(latest["checkpoint"], split="test", image_types=("photo",))
    assert by_type["photo"]["maxboxacc_50"] == photos["maxboxacc_50"]


def test_train_config_names_bad_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {manifest: x}\noutput: y\nmodel: {arch: tiny, insert_after: [nope]}\n")
    with pytest.raises(ConfigError, match="model"):
        load_train_settings(path)
    path.write_text("data: {manifest: x}\noutput: y\ntrain: {epochs: 1, momentun: 0.9}\n")
    with pytest.raises(ConfigError, match="momentun"):
        load_train_settings(path)
    assert load_train_settings("configs/train_cam.yaml").model.insert_after


def test_the_lite0_recipe_loads_and_names_bad_layers(tmp_path):
    settings = load_train_settings("configs/train_cam_lite0.yaml")
    assert settings.model.arch == "efficientnet_lite0" and settings.model.pretrained
    assert settings.data.image_size == 224 and settings.scaling.cpus_per_worker == 2
    path = tmp_path / "c.yaml"
    path.write_text("data: {manifest: x}\noutput: y\nmodel: {arch: efficientnet_lite0, insert_after: [conv5_3]}\n")
    with pytest.raises(ConfigError, match="conv5_3"):
        load_train_settings(path)


def _settings(train: dict, data: dict | None = None, workers: int = 1):
    from jobs.train.cam import TrainCamSettings

    return TrainCamSettings.model_validate({
        "data": {"manifest": "s3://x/manifest.parquet", **(data or {})}, "output": "s3://x/out",
        "train": train, "scaling": {"num_workers": workers, "cpus_per_worker": 1},
    })  # fmt: skip


def test_adversarial_config_reads_lambda_and_refuses_what_cannot_work():
    settings = _settings({"adversarial_type": {"enabled": True, "lambda": 0.5, "preset": "production"}})
    adv = settings.train.adversarial_type
    assert adv.lambda_ == 0.5 and adv.resolved("schedule") == "dann"
    assert type(settings).model_validate(settings.model_dump(mode="json")) == settings  # what workers receive
    with pytest.raises(ValueError, match="lamda"):
        _settings({"adversarial_type": {"lamda": 0.5}})
    with pytest.raises(ValueError, match="must be the training types"):
        _settings({"adversarial_type": {"enabled": True}}, {"image_types": ["photo", "sketch"]})
    with pytest.raises(ValueError, match="stratify_by"):
        _settings({"batches": {"stratify_by": "label"}})
    with pytest.raises(ValueError, match="type_ratio"):
        _settings({}, {"type_ratio": {"infrared": 1}})


def test_type_ratio_subsamples_and_every_worker_gets_every_type():
    import pandas as pd

    from jobs.train.cam import subsample_types, training_items

    rows = pd.DataFrame({
        "uri": [f"s3://x/{i}_{t}.png" for i in range(30) for t in ("photo", "sketch", "cartoon")],
        "label": ["cat", "dog"] * 45, "image_type": ["photo", "sketch", "cartoon"] * 30,
    })  # fmt: skip
    mix = subsample_types(rows, {"photo": 5, "sketch": 1, "cartoon": 1}, seed=0)
    assert mix.image_type.value_counts().to_dict() == {"photo": 30, "sketch": 6, "cartoon": 6}
    assert subsample_types(rows, {"photo": 5, "sketch": 1, "cartoon": 1}, seed=0).equals(mix)
    settings = _settings({"adversarial_type": {"enabled": True}}, workers=3)
    items = training_items(mix, ["cat", "dog"], settings)
    for worker in range(3):
        mine = items[items.worker == worker]
        assert set(mine.type) == {0, 1, 2} and len(mine) == 14
    assert list(items.index) == list(range(len(items)))


@pytest.mark.slow  # two DDP workers: about 70 s on 2 cores
def test_train_cam_adversarial_stratified_on_two_workers(ray_local, corpus):
    """Seed 002's recipe end to end on Ray Train: two DDP workers, each drawing type-stratified batches from its
    own partition, D trained beside the classifier and kept out of the model; stop_val_error ends it early."""
    from jobs.train.cam import TrainCamSettings, run_train_cam

    corpus_uri, _ = corpus
    output = "s3://test-train/cam-adversarial"
    settings = TrainCamSettings.model_validate({
        "data": {"manifest": storage.join(corpus_uri, "manifest.parquet"), "image_size": 48,
                 "type_ratio": {"photo": 5, "sketch": 1, "cartoon": 1}, "val_splits": ["val", "test"],
                 "val_image_types": ["photo", "sketch", "cartoon"]},
        "output": output,
        "model": {"arch": "tiny", "num_classes": 6, "width_mult": 0.25},
        "train": {"epochs": 3, "batch_size": 7, "stop_val_error": 1.0, "rotate90": 0.5, "blur": 0.5,
                  "adversarial_type": {"enabled": True, "preset": "production", "hidden": 16},
                  "batches": {"stratify_by": "image_type", "quota": "proportional"}},
        "scaling": {"num_workers": 2, "cpus_per_worker": 1},
        "ray": {"num_cpus": 2},
    })  # fmt: skip
    run_train_cam(settings)
    run_train_cam(settings)  # the rerun resumes a run that already stopped: nothing more to train
    history = read_json(storage.join(output, "history.json"))
    assert len(history) == 1  # an error of at most 100 % is met by the first validation
    assert history[0]["world_size"] == 2 and 0 <= history[0]["train_type_acc"] <= 1
    assert history[0]["train_loss_type"] > 0 and history[0]["train_lambda"] >= 0
    ckpt = load_checkpoint(storage.read_bytes(read_json(storage.join(output, "latest.json"))["checkpoint"]))
    head = ckpt["optimizer"]["adversarial"]["head"]
    assert head["net.2.weight"].shape == (3, 16)  # D is kept for resuming ...
    model, _ = build_from_checkpoint(ckpt)
    assert not any(k.startswith("net.") for k in model.state_dict())  # ... and never built into the model
    import numpy as np

    from jobs.common.config import CamConfig
    from jobs.score.stages.cam import CamStage

    stage = CamStage(CamConfig(checkpoint=read_json(storage.join(output, "latest.json"))["checkpoint"]))
    pixels = np.empty(1, dtype=object)
    pixels[:] = [np.full((40, 50, 3), 120, np.uint8)]
    out = stage(
        {"source_uri": np.array(["a"]), "error": np.array([""]), "error_code": np.array([""]), "pixels": pixels}
    )
    assert out["cam_class"][0] in stage.classes
    assert not any("type" in k for k in out)  # the stage reports content only: D is not run
