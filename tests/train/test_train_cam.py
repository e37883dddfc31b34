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
