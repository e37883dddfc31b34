"""`mediascore train restore` end to end: the real local Ray, Ray Train and the S3 server, on a tiny config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jobs.common import storage
from jobs.common.config import ConfigError
from jobs.common.storage import read_json
from jobs.media.restorer import Restorer
from jobs.train.restore import load_restore_settings, paths
from models.checkpoint import build_from_checkpoint, load_checkpoint


def test_short_training_lowers_l1_on_held_out_patches(restore_trained):
    settings, _ = restore_trained
    history = read_json(paths(settings.output)["history"])
    last = history[-1]
    assert last["val_l1"] < last["val_l1_input"]  # better than the degraded input on patches it never trained on
    assert last["val_l1"] < history[0]["val_l1"] or last["val_psnr"] > history[0]["val_psnr"]
    assert "train_loss_d" in last and "train_gan" in last  # the adversarial term ran after warm-up


def test_resume_continues_from_the_latest_checkpoint(restore_trained):
    settings, first = restore_trained
    history = read_json(paths(settings.output)["history"])
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert history[:2] == first  # the first two epochs were not redone
    assert history[2]["step"] > first[-1]["step"]


def test_checkpoint_round_trip_through_s3(restore_trained):
    settings, _ = restore_trained
    latest = read_json(paths(settings.output)["latest"])
    full = load_checkpoint(storage.read_bytes(latest["checkpoint"]))
    assert full["builder"] == "restore_generator" and full["epoch"] == 2
    assert set(full["extra"]) == {"generator", "discriminator", "discriminator_config"}
    assert {"opt_g", "opt_d", "step"} <= set(full["optimizer"])
    assert full["data"]["held_out"] and "quality_checkpoint" in full["data"]
    slim, meta = build_from_checkpoint(storage.read_bytes(latest["generator"]))
    assert meta["optimizer"] is None and meta["extra"] is None
    ema, _ = build_from_checkpoint(full)
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(slim(x), ema(x))  # generator.pt holds the same (EMA) weights
    image = (np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)
    restored = Restorer(latest["generator"], tile=32, overlap=8)(image)
    assert restored.shape == image.shape and restored.dtype == np.uint8


def test_samples_record_every_filter_decision(restore_trained):
    settings, _ = restore_trained
    record = read_json(paths(settings.output)["samples"])
    assert [r["source"] for r in record] == ["skimage:camera", "skimage:brick"]
    for r in record:
        assert r["kept"] == (r["quality_class"] == "good") and 0 <= r["quality"] <= 100


def test_config_refuses_bad_keys_and_held_out_photos(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"output: {tmp_path / 'out'}\ngenerator: {{widht: 8}}\n")
    with pytest.raises(ConfigError, match="widht"):
        load_restore_settings(bad)
    bad.write_text(f"output: {tmp_path / 'out'}\ntrain: {{adversarial: wasserstein}}\n")
    with pytest.raises(ConfigError, match="adversarial"):
        load_restore_settings(bad)
