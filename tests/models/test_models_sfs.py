"""Contracts of the suppress-fuse-select block (claims 2-6)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.sfs import (
    BOOST_CURVES,
    DiscriminativeSuppression,
    FeatureSelection,
    IrrelevantSuppression,
    SFSConfig,
    SuppressFuseSelect,
    alpha_for,
    sfs_config_from_dict,
)

CURVES = sorted(BOOST_CURVES)
CRS = (0.2, 0.4, 0.6, 0.75, 0.8, 0.95)


def hand_made(cr_or_t: float) -> torch.Tensor:
    """(1, 3, 4, 4): a ramp with one element exactly at the threshold, a zero channel, a random channel."""
    f = torch.zeros(1, 3, 4, 4)
    f[0, 0] = torch.linspace(0.0, 5.0, 16).view(4, 4)
    m = f[0, 0].amax()
    f[0, 0, 1, 1] = cr_or_t * m  # computed as the block computes it: float32 product of the fraction and the max
    f[0, 2] = torch.rand(4, 4, generator=torch.Generator().manual_seed(0)) * 3
    return f


@pytest.mark.parametrize("curve", CURVES)
@pytest.mark.parametrize("cr", CRS)
def test_curve_meets_identity_at_cr_and_boosts_below(curve, cr):
    g = BOOST_CURVES[curve]
    assert abs(g(torch.tensor(cr, dtype=torch.float64), cr).item() - cr) < 1e-6
    x = torch.linspace(0.0, cr, 101, dtype=torch.float64)
    y = g(x, cr)
    assert y[0].item() == 0.0
    assert torch.all(y[1:-1] > x[1:-1])
    assert torch.all(y <= 1.0)


def test_alpha_closed_forms():
    assert alpha_for("exp", 0.8) == pytest.approx(-math.log(0.2) / 0.8)
    assert alpha_for("exp", 0.8) == pytest.approx(2.0118, abs=1e-4)
    assert alpha_for("tanh", 0.8) == pytest.approx(math.atanh(0.8) / 0.8)
    assert alpha_for("exp", 0.0) == 1.0
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="cr"):
            alpha_for("exp", bad)
    with pytest.raises(ValueError, match="curve"):
        alpha_for("cubic", 0.5)


@pytest.mark.parametrize("curve", CURVES)
@pytest.mark.parametrize("cr", (0.4, 0.75, 0.8))
def test_discriminative_suppression_thresholds(curve, cr):
    f = hand_made(cr)
    d = DiscriminativeSuppression(cr=cr, curve=curve)(f)
    m = f.amax(dim=(2, 3), keepdim=True)
    above = f >= cr * m
    assert above[0, 0, 1, 1]  # the element equal to the threshold is removed (claim 4: "not smaller than")
    assert torch.all(d[above] == 0)
    below = ~above & (m > 0)
    assert torch.all(d[below] >= f[below] - 1e-6)
    expected = m * BOOST_CURVES[curve](f / m.clamp_min(1e-6), cr)
    torch.testing.assert_close(d[below], expected[below])
    assert torch.all(d[0, 1] == 0)  # the all-zero channel
    assert torch.all(d <= m)


@pytest.mark.parametrize("t", (0.2, 0.4, 0.75))
def test_irrelevant_suppression_thresholds(t):
    f = hand_made(t)
    s = IrrelevantSuppression(t=t)(f)
    keep = f >= t * f.amax(dim=(2, 3), keepdim=True)
    assert keep[0, 0, 1, 1]  # the element equal to the threshold is kept
    assert torch.equal(s[keep], f[keep])
    assert torch.all(s[~keep] == 0)
    assert torch.all(s[0, 1] == 0)


def test_zero_channel_gives_zeros_and_finite_gradients():
    f = torch.zeros(2, 4, 5, 5)
    f[1, 2] = torch.rand(5, 5)
    f.requires_grad_(True)
    block = SuppressFuseSelect(4)
    d, s = block.suppress_top(f), block.suppress_low(f)
    assert torch.all(d[0] == 0) and torch.all(s[0] == 0)
    out = block(f)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(f.grad).all()


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 7, 5), (3, 16, 14, 14)])
def test_block_keeps_shape(shape):
    f = F.relu(torch.randn(*shape))
    block = SuppressFuseSelect(shape[1])
    out = block(f)
    assert out.shape == f.shape
    assert block.last_weights.shape == (shape[0], 2 * shape[1])
    assert not block.last_weights.requires_grad
    assert torch.all((block.last_weights > 0) & (block.last_weights < 1))


@pytest.mark.parametrize("fc_act", ["relu", "none"])
def test_gradients_reach_input_and_every_parameter(fc_act):
    torch.manual_seed(0)
    f = F.relu(torch.randn(2, 8, 6, 6)).requires_grad_(True)
    block = SuppressFuseSelect(8, SFSConfig(fc_act=fc_act))
    block(f).sum().backward()
    assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    for name, p in block.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("curve", CURVES)
def test_branch_gradients_use_a_constant_mask(curve):
    cr, t = 0.8, 0.4
    f = hand_made(cr).requires_grad_(True)
    DiscriminativeSuppression(cr=cr, curve=curve)(f).sum().backward()
    m = f.detach().amax(dim=(2, 3), keepdim=True)
    x = (f.detach() / m.clamp_min(1e-6)).requires_grad_(True)
    BOOST_CURVES[curve](x, cr).sum().backward()  # d/dF [M g(F/M)] = g'(F/M) with M constant
    below = (f.detach() < cr * m) & (m > 0)
    torch.testing.assert_close(f.grad[below], x.grad[below])
    assert torch.all(f.grad[~below] == 0)

    f.grad = None
    IrrelevantSuppression(t=t)(f).sum().backward()
    keep = f.detach() >= t * m
    assert torch.all(f.grad[keep & (m > 0)] == 1) and torch.all(f.grad[~keep] == 0)


def test_detach_max_false_sends_gradient_through_the_max():
    f = hand_made(0.8).requires_grad_(True)
    DiscriminativeSuppression(cr=0.8, detach_max=False)(f).sum().backward()
    assert f.grad[0, 0, 3, 3] != 0  # the argmax is suppressed, but it scales every boosted value
    f.grad = None
    DiscriminativeSuppression(cr=0.8, detach_max=True)(f).sum().backward()
    assert f.grad[0, 0, 3, 3] == 0


def test_feature_selection_uses_global_max_pooling():
    torch.manual_seed(0)
    sel = FeatureSelection(2)
    m = torch.zeros(1, 4, 5, 5)
    m[0, 0, 0, 0] = 10.0  # max 10, mean 0.4
    m[0, 1] = 1.0  # max 1, mean 1
    m[0, 2, 2:4, 2:4] = 3.0
    m[0, 3] = torch.arange(25.0).view(5, 5) / 25
    out = sel(m)

    def expected(pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.sigmoid(sel.fc2(torch.relu(sel.fc1(pooled))))  # (1, 4)
        return w, sel.reduce(m * w[:, :, None, None])

    w_max, out_max = expected(m.amax(dim=(2, 3)))
    _, out_avg = expected(m.mean(dim=(2, 3)))
    torch.testing.assert_close(out, out_max)
    torch.testing.assert_close(sel.last_weights, w_max)
    assert not torch.allclose(out, out_avg)
    assert out.shape == (1, 2, 5, 5)


def test_block_is_concat_then_selection():
    torch.manual_seed(0)
    f = F.relu(torch.randn(2, 3, 6, 6))
    block = SuppressFuseSelect(3, SFSConfig(cr=0.7, t=0.3, curve="tanh"))
    fused = torch.cat([block.suppress_top(f), block.suppress_low(f)], dim=1)
    torch.testing.assert_close(block(f), block.select(fused))


def test_config_validation_and_from_dict():
    with pytest.raises(ValueError, match="cr"):
        SFSConfig(cr=1.0)
    with pytest.raises(ValueError, match="t must"):
        SFSConfig(t=0.0)
    with pytest.raises(ValueError, match="fc_act"):
        SFSConfig(fc_act="gelu")
    assert sfs_config_from_dict({"cr": 0.6, "curve": "tanh"}) == SFSConfig(cr=0.6, curve="tanh")
    with pytest.raises(ValueError, match="'thr'"):
        sfs_config_from_dict({"thr": 0.5})


def test_passthrough_init_outputs_branch_2_and_trains_branch_1_from_zero():
    block = SuppressFuseSelect(8, SFSConfig(init="passthrough"))
    f = torch.relu(torch.randn(2, 8, 5, 5))
    top = f.amax(dim=(2, 3), keepdim=True)
    assert torch.allclose(block(f), torch.where(f >= 0.4 * top, f, torch.zeros_like(f)), atol=1e-6)
    assert block.select.reduce.weight[:, :8].abs().sum() == 0
    block(f).sum().backward()
    assert block.select.reduce.weight.grad[:, :8].abs().sum() > 0  # branch 1's columns learn
    with pytest.raises(ValueError, match="init"):
        SFSConfig(init="identity")
