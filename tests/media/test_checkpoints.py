"""Checkpoints read from storage and rebuilt: one loader for stages, serve, training and evals."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from jobs.common import storage
from jobs.media.checkpoints import device_for, load_model, read_checkpoint
from models.cam_net import CamNetConfig, build_cam_net
from models.checkpoint import checkpoint_bytes


@pytest.fixture
def cam_uri(s3, tmp_path):
    torch.manual_seed(0)
    cfg = CamNetConfig(arch="tiny", num_classes=3, width_mult=0.25)
    net = build_cam_net(cfg)
    blob = checkpoint_bytes(net, "cam_net", dataclasses.asdict(cfg), step=6, epoch=2, metrics={"top1": 0.5}, data={})
    uri = "s3://ckpt-test/cam/epoch_0002.pt"
    storage.ensure_bucket(uri)
    storage.write_bytes(uri, blob)
    return net, uri


def test_load_model_rebuilds_the_same_network_in_eval_mode_and_says_what_it_is(cam_uri):
    net, uri = cam_uri
    model, ckpt, info = load_model(uri, "cpu")
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    assert not model.training
    assert torch.allclose(model(x), net(x))
    assert ckpt["epoch"] == 2 and ckpt["builder"] == "cam_net"
    assert info["version"] == f"{uri}#epoch=2" and info["metrics"] == {"top1": 0.5} and info["step"] == 6
    assert read_checkpoint(uri)["config"] == ckpt["config"]


def test_device_defaults_to_cuda_only_when_there_is_one():
    assert device_for("cpu") == torch.device("cpu")
    assert device_for().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_missing_or_foreign_object_fails_clearly(s3):
    storage.ensure_bucket("s3://ckpt-test")
    with pytest.raises(FileNotFoundError):
        load_model("s3://ckpt-test/nothing-here.pt")
    storage.write_bytes("s3://ckpt-test/not-a-checkpoint.pt", b"hello")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        read_checkpoint("s3://ckpt-test/not-a-checkpoint.pt")
