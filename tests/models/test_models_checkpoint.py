"""Self-describing checkpoints: bytes round trip, rebuilt model, metadata and format errors."""

from __future__ import annotations

import dataclasses
import io
from datetime import datetime

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.cam_net import CamNet, CamNetConfig, build_cam_net
from models.checkpoint import (
    BUILDERS,
    FORMAT,
    build_from_checkpoint,
    checkpoint_bytes,
    load_checkpoint,
    release_bytes,
)
from models.sfs import SFSConfig


@pytest.fixture(scope="module")
def trained():
    """A tiny net with a block after one SGD step (so BN statistics and momentum buffers are not defaults)."""
    torch.manual_seed(0)
    cfg = CamNetConfig(arch="tiny", num_classes=3, insert_after=("conv2_2",), width_mult=0.25, sfs=SFSConfig(cr=0.7))
    net = build_cam_net(cfg)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    F.cross_entropy(net(x), y).backward()
    opt.step()
    return net, cfg, opt


def test_round_trip_gives_identical_outputs_and_metadata(trained):
    net, cfg, opt = trained
    metrics = {"top1": np.float32(87.5), "maxboxacc_50": 61.1, "n": np.int64(200)}
    data = {"manifest": "s3://bucket/manifest.parquet", "manifest_sha1": "ab" * 20, "classes": ["a", "b", "c"]}
    blob = checkpoint_bytes(
        net, "cam_net", dataclasses.asdict(cfg), step=120, epoch=3, metrics=metrics, data=data,
        optimizer_state=opt.state_dict(), extra={"note": "test"},
    )  # fmt: skip
    assert isinstance(blob, bytes)

    model, ckpt = build_from_checkpoint(blob)
    assert isinstance(model, CamNet) and not model.training
    assert model.cfg == cfg
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=0, atol=0)
        torch.testing.assert_close(model.cam(x)[1], net.cam(x)[1], rtol=0, atol=0)

    assert ckpt["format"] == FORMAT and ckpt["builder"] == "cam_net"
    assert ckpt["step"] == 120 and ckpt["epoch"] == 3
    assert ckpt["metrics"] == {"top1": 87.5, "maxboxacc_50": 61.1, "n": 200}
    assert ckpt["data"] == data
    assert ckpt["extra"] == {"note": "test"}
    assert ckpt["versions"]["torch"] == torch.__version__
    assert datetime.fromisoformat(ckpt["created"]).tzinfo is not None
    assert ckpt["config"]["sfs"]["cr"] == 0.7

    fresh = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fresh.load_state_dict(ckpt["optimizer"])
    saved = opt.state_dict()["state"][0]["momentum_buffer"]
    torch.testing.assert_close(fresh.state_dict()["state"][0]["momentum_buffer"], saved)


def test_load_and_build_from_a_loaded_dict(trained):
    net, cfg, _ = trained
    blob = checkpoint_bytes(net, "cam_net", dataclasses.asdict(cfg), step=0, epoch=0, metrics={}, data={})
    ckpt = load_checkpoint(blob)
    assert ckpt["optimizer"] is None
    model, same = build_from_checkpoint(ckpt)
    assert same is ckpt
    assert set(model.state_dict()) == set(net.state_dict())


def test_release_drops_the_optimizer_and_halves_the_weights(trained):
    net, cfg, opt = trained
    blob = checkpoint_bytes(
        net, "cam_net", dataclasses.asdict(cfg), step=7, epoch=2, metrics={"top1": 50.0}, data={"classes": ["a"]},
        optimizer_state=opt.state_dict(),
    )  # fmt: skip
    shipped = release_bytes(blob)
    assert len(shipped) < 0.4 * len(blob)  # momentum buffers gone, float32 -> float16
    ckpt = load_checkpoint(shipped)
    assert ckpt["optimizer"] is None and ckpt["metrics"] == {"top1": 50.0} and ckpt["step"] == 7
    halves = {v.dtype for v in ckpt["state_dict"].values() if v.is_floating_point()}
    assert halves == {torch.float16}
    assert ckpt["state_dict"]["features.conv1_1.bn.num_batches_tracked"].dtype == torch.int64
    model, _ = build_from_checkpoint(shipped)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # loading casts back into the built model
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=1e-2, atol=1e-3)
        assert not torch.equal(model(x), net(x))  # it really was rounded
    kept = load_checkpoint(release_bytes(blob, dtype=None))
    assert kept["optimizer"] is None
    assert all(torch.equal(kept["state_dict"][k], v) for k, v in net.state_dict().items())


def test_builder_registry_accepts_the_asdict_config():
    cfg = CamNetConfig(arch="vgg16", insert_after=("conv5_3",), width_mult=0.0625)
    model = BUILDERS["cam_net"](dataclasses.asdict(cfg))
    assert isinstance(model, CamNet) and model.cfg == cfg


def test_wrong_format_and_garbage_raise():
    buffer = io.BytesIO()
    torch.save({"format": "something-else/9", "state_dict": {}}, buffer)
    with pytest.raises(ValueError, match="format"):
        load_checkpoint(buffer.getvalue())
    with pytest.raises(ValueError, match="checkpoint"):
        load_checkpoint(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="format"):
        build_from_checkpoint({"builder": "cam_net"})


def test_unknown_builder_or_unserializable_config_raise(trained):
    net, cfg, _ = trained
    with pytest.raises(ValueError, match="builder"):
        checkpoint_bytes(net, "resnet", {}, step=0, epoch=0, metrics={}, data={})
    with pytest.raises(ValueError, match="JSON"):
        checkpoint_bytes(net, "cam_net", dataclasses.asdict(cfg), step=0, epoch=0, metrics={"f": object()}, data={})
