"""The restoration networks, the tiling and the GAN recipe on tiny configs."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from models.quality_net import CLASSES, QualityNetConfig, build_quality_net, quality_number
from models.restore_net import (
    DiscriminatorConfig,
    GeneratorConfig,
    build_discriminator,
    build_generator,
    generator_config_from_dict,
)
from models.restore_recipe import (
    RestoreRecipe,
    RestoreTrainConfig,
    discriminator_loss,
    generator_adversarial_loss,
    joint_loss,
)
from models.tiling import tile_starts, tiled_apply

TINY_G = GeneratorConfig(width=8, levels=2, blocks=1, middle_blocks=1, unshuffle=2)
TINY_D = DiscriminatorConfig(width=8, layers=2)


@pytest.mark.parametrize("size", [(32, 32), (37, 53), (8, 200)])
def test_generator_keeps_any_size_and_starts_as_identity(size):
    torch.manual_seed(0)
    g = build_generator(TINY_G).eval()
    x = torch.rand(2, 3, *size)
    y = g(x)
    assert y.shape == x.shape
    assert torch.allclose(y, x)  # zero-initialized tail + global skip


def test_generator_without_global_skip_is_not_identity():
    g = build_generator(GeneratorConfig(width=8, levels=1, residual=False)).eval()
    x = torch.rand(1, 3, 16, 16)
    assert torch.allclose(g(x), torch.zeros_like(x))  # the zero tail alone


def test_generator_config_rejects_unknown_keys_and_round_trips_dicts():
    assert generator_config_from_dict({"width": 8, "levels": 1}).width == 8
    with pytest.raises(ValueError, match="widht"):
        generator_config_from_dict({"widht": 8})


def test_patch_discriminator_gives_a_map_of_logits():
    d = build_discriminator(TINY_D)
    out = d(torch.rand(3, 3, 64, 64))
    assert out.shape == (3, 1, 16, 16)
    assert any("parametrizations" in name for name, _ in d.named_parameters())  # spectral norm on
    plain = build_discriminator(DiscriminatorConfig(width=8, layers=2, spectral_norm=False))
    assert not any("parametrizations" in name for name, _ in plain.named_parameters())


def test_quality_net_head_and_features():
    net = build_quality_net(QualityNetConfig(widths=(4, 8, 8), hidden=8)).eval()
    x = torch.rand(2, 3, 48, 48)
    assert net(x).shape == (2, len(CLASSES))
    assert [m.shape[-1] for m in net.features(x)] == [48, 24, 12]
    number = quality_number(torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 0.5, 0.5]]))
    assert number.tolist() == pytest.approx([15.0, 80.0, 62.5])


def test_tile_starts_cover_the_axis_with_full_tiles():
    assert tile_starts(100, 128, 16) == [0]
    starts = tile_starts(300, 128, 32)
    assert starts[0] == 0 and starts[-1] == 300 - 128
    assert all(b - a <= 128 - 32 for a, b in itertools.pairwise(starts))


def test_tiled_identity_is_exact_and_bad_overlap_fails():
    x = torch.rand(2, 3, 70, 150)
    assert torch.allclose(tiled_apply(lambda t: t, x, tile=32, overlap=8), x, atol=1e-6)
    with pytest.raises(ValueError, match="overlap"):
        tiled_apply(lambda t: t, x, tile=32, overlap=32)


def _single_cover(size: int, tile: int, overlap: int) -> torch.Tensor:
    count = torch.zeros(size)
    for start in tile_starts(size, tile, overlap):
        count[start : start + tile] += 1
    return count == 1


def test_tiled_output_equals_untiled_away_from_seams():
    torch.manual_seed(0)
    net = torch.nn.Sequential(*(torch.nn.Conv2d(3, 3, 3, padding=1) for _ in range(3))).eval()  # radius 3
    x = torch.rand(1, 3, 96, 160)
    with torch.no_grad():
        whole, tiled = net(x), tiled_apply(net, x, tile=64, overlap=16)
    alone = _single_cover(96, 64, 16)[:, None] & _single_cover(160, 64, 16)[None, :]  # (H, W)
    assert alone.sum() > 0.3 * alone.numel()
    diff = (tiled - whole).abs()[0].amax(0)
    assert diff[alone].max() < 1e-5
    assert diff.max() < 0.1  # inside the overlaps both tiles are close and blend


def test_tiled_generator_is_close_to_untiled_everywhere():
    torch.manual_seed(0)
    g = build_generator(TINY_G).eval()
    torch.nn.init.normal_(g.tail.weight, std=0.05)  # a non-trivial network
    x = torch.rand(1, 3, 96, 160)
    with torch.no_grad():
        diff = (tiled_apply(g, x, tile=64, overlap=24) - g(x)).abs()
    assert diff.mean() < 5e-3 and diff.max() < 0.05  # about one grey level on average


def test_joint_loss_by_hand():
    cfg = RestoreTrainConfig(k1=1.0, k2=1e-4)
    target = torch.tensor([[[[0.0, 1.0]]]])
    fake = torch.tensor([[[[0.5, 0.5]]]])
    l1 = F.l1_loss(fake, target)  # (0.5 + 0.5) / 2
    fake_logits = torch.tensor([0.0, math.log(3.0)])  # D(G) = 0.5 and 0.75
    adv = generator_adversarial_loss("nonsaturating", torch.zeros(2), fake_logits)
    expected_adv = -(math.log(0.5) + math.log(0.75)) / 2
    assert adv.item() == pytest.approx(expected_adv, rel=1e-6)
    assert joint_loss(cfg, l1, adv, None).item() == pytest.approx(0.5 + 1e-4 * expected_adv, rel=1e-6)
    literal = generator_adversarial_loss("literal", torch.zeros(2), fake_logits)  # D(I_t) = 0.5 twice
    assert literal.item() == pytest.approx(-math.log(0.5) + expected_adv, rel=1e-6)
    d = discriminator_loss("nonsaturating", torch.zeros(2), fake_logits)
    assert d.item() == pytest.approx(-math.log(0.5) - (math.log(0.5) + math.log(0.25)) / 2, rel=1e-6)


def _params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module):
    after = module.state_dict()
    return {k for k, v in before.items() if v.dtype.is_floating_point and not torch.equal(v, after[k])}


def test_each_network_is_updated_only_by_its_own_step():
    torch.manual_seed(0)
    g, d = build_generator(TINY_G), build_discriminator(TINY_D)
    recipe = RestoreRecipe(g, d, RestoreTrainConfig(k2=0.1, ema_decay=0.9))
    lq, hq = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    g0, d0 = _params(g), _params(d)
    fake = g(lq)
    recipe._d_step(hq, fake.detach())
    assert _changed(d0, d) and not _changed(g0, g)
    d1 = _params(d)
    recipe._g_step(hq, g(lq), adversarial=True)
    assert _changed(g0, g) and not _changed(d1, d)
    stats = recipe.train_step(lq, hq)
    assert {"loss_d", "loss_g", "l1", "gan"} <= set(stats)
    assert recipe.step == 1 and recipe.ema.updates == 1


def test_warmup_and_l1_only_skip_the_discriminator():
    torch.manual_seed(0)
    g, d = build_generator(TINY_G), build_discriminator(TINY_D)
    recipe = RestoreRecipe(g, d, RestoreTrainConfig(warmup_steps=2))
    d0 = _params(d)
    lq, hq = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    for _ in range(2):
        assert "loss_d" not in recipe.train_step(lq, hq)
    assert not _changed(d0, d)
    assert "loss_d" in recipe.train_step(lq, hq)
    l1_only = RestoreRecipe(build_generator(TINY_G), None, RestoreTrainConfig(adversarial="none"))
    assert set(l1_only.train_step(lq, hq)) == {"loss_g", "l1"}
    with pytest.raises(ValueError, match="discriminator"):
        RestoreRecipe(build_generator(TINY_G), None, RestoreTrainConfig())


def test_perceptual_term_uses_the_frozen_feature_net():
    torch.manual_seed(0)
    feat = build_quality_net(QualityNetConfig(widths=(4, 8), hidden=0))
    before = _params(feat)
    recipe = RestoreRecipe(
        build_generator(TINY_G), None, RestoreTrainConfig(adversarial="none", perceptual=1.0), feature_net=feat
    )
    stats = recipe.train_step(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    assert stats["perceptual"] > 0
    assert not _changed(before, feat)


def test_l1_recipe_learns_to_denoise():
    torch.manual_seed(0)
    g = build_generator(TINY_G)
    recipe = RestoreRecipe(g, None, RestoreTrainConfig(adversarial="none", lr_g=2e-3, ema_decay=0))
    clean = F.avg_pool2d(torch.rand(8, 3, 64, 64), 5, stride=1, padding=2)  # smooth targets
    noisy = (clean + 0.1 * torch.randn_like(clean)).clamp(0, 1)
    first = recipe.train_step(noisy, clean)["l1"].item()
    for _ in range(60):
        last = recipe.train_step(noisy, clean)["l1"].item()
    assert last < 0.85 * first
