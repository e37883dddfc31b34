"""Shape and CAM contracts of the CAM backbones, with and without suppress-fuse-select blocks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models.cam_net import CamNetConfig, build_cam_net, cam_net_config_from_dict, conv_layer_names
from models.sfs import SFSConfig, SuppressFuseSelect

# (arch, width_mult, input side, feature side, feature channels at width_mult 1); narrow nets keep CPU time low
ARCHS = {"tiny": (0.25, 128, 16, 128), "vgg16": (0.0625, 224, 14, 1024)}
INSERTS = {
    "tiny": [(), ("conv3_2",), ("conv1_1", "conv2_2", "conv4_2")],
    "vgg16": [(), ("conv5_3",), ("conv3_3", "conv4_3", "conv5_3"), ("conv6",)],
}
CASES = [(arch, ins) for arch, options in INSERTS.items() for ins in options]


@pytest.mark.parametrize(("arch", "insert_after"), CASES)
def test_shapes_for_every_arch_and_insertion(arch, insert_after):
    torch.manual_seed(0)
    width, side, fside, channels = ARCHS[arch]
    cfg = CamNetConfig(arch=arch, num_classes=5, insert_after=insert_after, width_mult=width)
    net = build_cam_net(cfg).eval()
    x = torch.randn(1, 3, side, side)
    with torch.no_grad():
        feats = net.forward_features(x)
        logits = net.forward_head(feats)
        pooled = net.forward_head(feats, pre_logits=True)
    k = round(channels * width)
    assert feats.shape == (1, k, fside, fside)
    assert logits.shape == (1, 5)
    assert pooled.shape == (1, k)
    assert set(net.sfs_blocks) == set(insert_after)
    assert sum(isinstance(m, SuppressFuseSelect) for m in net.modules()) == len(insert_after)
    if not insert_after or insert_after[-1] not in ("conv4_2", "conv6"):
        assert torch.all(feats >= 0)  # the map feeding GAP comes after a ReLU


def test_blocks_sit_right_after_their_conv():
    net = build_cam_net(CamNetConfig(arch="tiny", insert_after=("conv2_2", "conv1_1")))
    names = [n for n, _ in net.features.named_children()]
    assert names[names.index("conv1_1") + 1] == "sfs_conv1_1"
    assert names[names.index("conv2_2") + 1] == "sfs_conv2_2"
    assert net.sfs_blocks["conv2_2"].select.reduce.out_channels == 32


def test_conv_names():
    tiny = build_cam_net(CamNetConfig(arch="tiny"))
    assert tiny.conv_names == [f"conv{s}_{i}" for s in range(1, 5) for i in (1, 2)]
    vgg = conv_layer_names("vgg16")
    assert len(vgg) == 14 and vgg[6] == "conv3_3" and vgg[9] == "conv4_3" and vgg[12] == "conv5_3"
    assert vgg[-1] == "conv6"


@pytest.mark.parametrize("arch", ["tiny", "vgg16"])
def test_cam_is_fc_weights_times_features(arch):
    torch.manual_seed(0)
    width = ARCHS[arch][0]
    net = build_cam_net(CamNetConfig(arch=arch, num_classes=4, insert_after=("conv2_2",), width_mult=width)).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        feats = net.forward_features(x)
        logits = net(x)
        for class_idx in (torch.tensor([0, 3, 1]), None):
            out_logits, cam = net.cam(x, class_idx)
            idx = logits.argmax(1) if class_idx is None else class_idx
            expected = torch.einsum("bk,bkhw->bhw", net.fc.weight[idx], feats)
            torch.testing.assert_close(out_logits, logits)
            torch.testing.assert_close(cam, expected)
    assert cam.shape == (3, *feats.shape[-2:])
    # GAP of the CAM plus the bias is the logit of that class.
    torch.testing.assert_close(cam.mean(dim=(1, 2)) + net.fc.bias[idx], logits.gather(1, idx[:, None])[:, 0])


def test_unknown_or_duplicate_insert_name_raises():
    with pytest.raises(ValueError, match=r"conv9_9.*conv1_1"):
        CamNetConfig(arch="tiny", insert_after=("conv9_9",))
    with pytest.raises(ValueError, match="conv5_3"):
        build_cam_net(cam_net_config_from_dict({"arch": "tiny", "insert_after": ["conv5_3"]}))
    with pytest.raises(ValueError, match="duplicate"):
        CamNetConfig(arch="tiny", insert_after=("conv1_1", "conv1_1"))
    with pytest.raises(ValueError, match="arch"):
        CamNetConfig(arch="resnet")


def test_config_round_trip_from_dict():
    cfg = CamNetConfig(
        arch="vgg16", num_classes=3, insert_after=("conv4_3", "conv5_3"), sfs=SFSConfig(cr=0.7, curve="tanh"),
        width_mult=0.25, dropout=0.1,
    )  # fmt: skip
    plain = dataclasses.asdict(cfg)
    assert isinstance(plain["sfs"], dict)
    plain["insert_after"] = list(plain["insert_after"])  # as YAML or JSON gives it back
    back = cam_net_config_from_dict(plain)
    assert back == cfg
    assert isinstance(back.insert_after, tuple) and isinstance(back.sfs, SFSConfig)
    assert cam_net_config_from_dict({}) == CamNetConfig()
    assert cam_net_config_from_dict({"insert_after": "conv3_2"}).insert_after == ("conv3_2",)


def test_unknown_config_keys_raise_with_the_key():
    with pytest.raises(ValueError, match="'depth'"):
        cam_net_config_from_dict({"arch": "tiny", "depth": 3})
    with pytest.raises(ValueError, match="'alpha'"):
        cam_net_config_from_dict({"sfs": {"alpha": 0.8}})


def test_width_mult_and_dropout():
    net = build_cam_net(CamNetConfig(arch="tiny", width_mult=0.5, dropout=0.5, num_classes=2))
    assert net.num_features == 64 and net.fc.in_features == 64
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x))  # dropout is off in eval mode


def test_efficientnet_lite0_gives_a_14_by_14_cam_from_its_imagenet_features():
    from models.efficientnet import lite0_weights_file

    cfg = CamNetConfig(arch="efficientnet_lite0", num_classes=6, insert_after=("stage6", "head"))
    net = build_cam_net(cfg).eval()
    names = [n for n, _ in net.features.named_children()]
    assert names[0] == "stem" and names[-2:] == ["head", "sfs_head"]
    assert names.index("sfs_stage6") == names.index("stage6_4") + 1 and set(net.sfs_blocks) == {"stage6", "head"}
    logits, cam = net.cam(torch.randn(2, 3, 224, 224))
    assert logits.shape == (2, 6) and cam.shape == (2, 14, 14)
    source = torch.load(lite0_weights_file(), map_location="cpu", weights_only=True)
    assert torch.equal(net.features.stage4_2.depthwise.conv.conv.weight, source["_blocks.6._depthwise_conv.weight"])
    scratch = build_cam_net(dataclasses.replace(cfg, pretrained=False))
    assert not torch.equal(scratch.features.stem.conv.conv.weight, net.features.stem.conv.conv.weight)
    assert conv_layer_names("efficientnet_lite0") == [f"stage{s}" for s in range(1, 8)] + ["head"]
    with pytest.raises(ValueError, match="width_mult"):
        CamNetConfig(arch="efficientnet_lite0", width_mult=0.5)


def test_a_passthrough_block_leaves_the_pretrained_features_as_they_were_but_the_weakest():
    plain = build_cam_net(CamNetConfig(arch="efficientnet_lite0", num_classes=6)).eval()
    blocked = build_cam_net(CamNetConfig(arch="efficientnet_lite0", num_classes=6, insert_after=("head",),
                                         sfs=SFSConfig(init="passthrough")))  # fmt: skip
    blocked.load_state_dict(plain.state_dict(), strict=False)
    blocked.eval()
    x = torch.randn(1, 3, 128, 128)
    before, after = plain.forward_features(x), blocked.forward_features(x)
    top = before.amax(dim=(2, 3), keepdim=True)
    assert torch.allclose(after, torch.where(before >= 0.4 * top, before, torch.zeros_like(before)), atol=1e-5)
