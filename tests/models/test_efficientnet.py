"""EfficientNet: the ImageNet Lite0 weights load and classify real photos; MBConv in 2D and 3D; the loader
refuses weights that do not fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models.efficientnet import (
    EfficientNet,
    EfficientNetConfig,
    MBConv,
    SameConv,
    SqueezeExcitation,
    adapt_stem,
    build_efficientnet,
    lite0_weights_file,
    load_lite0_imagenet,
    map_state_dict,
    preprocess,
)


@pytest.fixture(scope="module")
def imagenet():
    return load_lite0_imagenet(EfficientNet()).eval()


def _probabilities(net: EfficientNet, name: str) -> torch.Tensor:
    import skimage.data

    image = np.array(Image.fromarray(getattr(skimage.data, name)()).resize((224, 224), Image.BILINEAR))
    with torch.no_grad():
        return net(preprocess(torch.from_numpy(image).permute(2, 0, 1)[None])).softmax(1)[0]


def test_the_imagenet_network_knows_a_cat_and_an_espresso(imagenet):
    """The thresholds are what TensorFlow's padding and (x - 127) / 128 reach; symmetric padding (p 0.70 on the
    cat) or inputs in [0, 1] (0.72 and 0.61) fall short of them."""
    cat, coffee = _probabilities(imagenet, "chelsea"), _probabilities(imagenet, "coffee")
    assert 281 <= int(cat.argmax()) <= 285 and float(cat[281:286].sum()) > 0.9 and float(cat.max()) >= 0.78
    assert 967 <= int(coffee.argmax()) <= 968 and float(coffee.max()) >= 0.88
    symmetric = load_lite0_imagenet(EfficientNet(EfficientNetConfig(same_padding=False))).eval()
    assert float(_probabilities(symmetric, "chelsea").max()) < 0.75


def test_same_padding_puts_the_odd_pixel_at_the_end():
    conv = SameConv(2, 1, 1, kernel=3, stride=2)
    torch.nn.init.ones_(conv.conv.weight)
    out = conv(torch.ones(1, 1, 4, 4))  # total padding 1: none in front, one row and column behind
    assert out.shape == (1, 1, 2, 2) and out[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]


@pytest.mark.parametrize("variant", ["lite0", "b0"])
def test_both_layouts_in_3d_give_the_head_features_of_a_volume(variant):
    net = EfficientNet(EfficientNetConfig(variant=variant, dims=3, num_classes=2)).eval()
    volume = torch.randn(2, 3, 16, 64, 48)
    features = net.forward_features(volume)
    assert features.shape == (2, 1280, 1, 2, 2)
    assert net.forward_head(features, pre_logits=True).shape == (2, 1280) and net(volume).shape == (2, 2)
    has_se = any(not isinstance(b.se, torch.nn.Identity) for b in net.blocks)
    assert has_se == (variant == "b0") and len(net.blocks) == 16 and net.stage_of[-1] == "stage7"


def test_last_stride_1_gives_a_14_by_14_map_from_224_pixels():
    net = EfficientNet(EfficientNetConfig(last_stride=1)).eval()
    assert net.forward_features(torch.zeros(1, 3, 224, 224)).shape == (1, 1280, 14, 14)
    assert sum(p.numel() for p in net.parameters()) == 4_652_008  # the Lite0 layout's 4.65 M parameters


def test_drop_connect_drops_whole_branches_in_training_only():
    cfg = EfficientNetConfig()
    block = MBConv(cfg, 16, 16, expansion=6, kernel=3, stride=1, drop_connect=0.5).eval()
    x = torch.randn(8, 16, 8, 8)
    assert torch.equal(block(x), block(x))
    block.train()
    torch.manual_seed(0)
    branch = block(x) - x
    kept = [bool(branch[i].abs().sum() > 0) for i in range(8)]
    assert any(kept) and not all(kept)


def test_the_loader_refuses_weights_that_do_not_fit():
    source = torch.load(lite0_weights_file(), map_location="cpu", weights_only=True)
    with pytest.raises(ValueError, match="missing"):
        map_state_dict(source, EfficientNet(EfficientNetConfig(variant="b0")))  # B0's squeeze-excitation is not there
    bent = dict(source) | {"_conv_head.weight": torch.zeros(1280, 321, 1, 1)}
    with pytest.raises(ValueError, match=r"head.conv.conv.weight: \(1280, 321, 1, 1\)"):
        map_state_dict(bent, EfficientNet())
    with pytest.raises(ValueError, match="without a place"):
        map_state_dict(dict(source) | {"_extra.weight": torch.zeros(1)}, EfficientNet())
    with pytest.raises(ValueError, match="2D, 3-channel lite0"):
        load_lite0_imagenet(EfficientNet(EfficientNetConfig(dims=3)))


def test_a_new_classifier_keeps_the_pretrained_features():
    net = load_lite0_imagenet(EfficientNet(EfficientNetConfig(num_classes=6)), head=False)
    source = torch.load(lite0_weights_file(), map_location="cpu", weights_only=True)
    assert torch.equal(net.stem.conv.conv.weight, source["_conv_stem.weight"]) and net.fc.out_features == 6


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("stride", [1, 2])
def test_mbconv_keeps_or_halves_every_spatial_size(dims, stride):
    cfg = EfficientNetConfig(variant="b0", dims=dims)
    block = MBConv(cfg, 16, 24, expansion=6, kernel=5, stride=stride, drop_connect=0.0).eval()
    size = (9,) * dims
    out = block(torch.randn(2, 16, *size))
    assert out.shape == (2, 24, *((9 + stride - 1) // stride,) * dims)  # "same" padding: ceil(size / stride)
    same = MBConv(cfg, 16, 16, expansion=1, kernel=3, stride=1, drop_connect=0.0)
    assert same.skip and not block.skip


def test_squeeze_excitation_scales_each_channel_by_a_gate_of_its_pooled_value():
    se = SqueezeExcitation(EfficientNetConfig(variant="b0"), channels=4, reduced=2).eval()
    x = torch.rand(1, 4, 5, 5) + 0.1
    gates = se(x) / x
    per_channel = gates.flatten(2)
    assert torch.allclose(per_channel, per_channel[..., :1].expand_as(per_channel))  # one gate per channel
    assert bool(((per_channel > 0) & (per_channel < 1)).all())
    assert not torch.allclose(per_channel[0, 0, 0], per_channel[0, 1, 0])


def test_the_b0_layout_has_its_5_3_million_parameters():
    net = EfficientNet(EfficientNetConfig(variant="b0"))
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(5_288_548, rel=1e-3)


def test_a_grey_stem_answers_a_grey_image_as_the_rgb_stem_answers_it_in_three_equal_channels():
    rgb = build_efficientnet(EfficientNetConfig(num_classes=1)).eval()
    grey = build_efficientnet(EfficientNetConfig(num_classes=1, in_channels=1)).eval()
    image = torch.rand(1, 1, 32, 32)
    assert torch.allclose(grey.stem(image), rgb.stem(image.expand(-1, 3, -1, -1)), atol=1e-5)
    assert adapt_stem(torch.ones(8, 3, 3, 3), 4).shape == (8, 4, 3, 3)


def test_inflated_kernels_answer_a_depth_constant_volume_as_the_2d_network_answers_its_slice():
    """Away from the first and last slices (where the depth padding is zeros) the 3D stem and first block give
    the 2D network's activations on every slice."""
    flat = build_efficientnet(EfficientNetConfig(num_classes=1)).eval()
    deep = build_efficientnet(EfficientNetConfig(num_classes=1, dims=3), init="inflate").eval()
    image = torch.randn(1, 3, 32, 32)
    volume = image.unsqueeze(2).expand(-1, -1, 16, -1, -1)
    with torch.no_grad():
        want = flat.blocks[0](flat.stem(image))
        got = deep.blocks[0](deep.stem(volume))
    assert got.shape[2] == 8
    for d in range(2, 6):
        assert torch.allclose(got[:, :, d], want, atol=1e-4)
    with pytest.raises(ValueError, match="3D networks"):
        build_efficientnet(EfficientNetConfig(dims=2), init="inflate")
    with pytest.raises(ValueError, match="lite0 only"):
        build_efficientnet(EfficientNetConfig(variant="b0"), init="imagenet")
