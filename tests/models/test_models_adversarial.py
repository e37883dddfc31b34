"""Seed 002's adversarial image-type head: which step moves which network, the F gradient by hand, lambda 0 as
plain training, the divergence guard, the presets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.adversarial import (
    AdversarialConfig,
    AdversarialDivergence,
    AdversarialUpdate,
    TypeHead,
    dann_schedule,
    grad_reverse,
)
from models.cam_net import CamNetConfig, build_cam_net
from models.cam_recipe import CamRecipe, CamTrainConfig

LR = 0.1


class Tiny:
    """F (4 -> 6), C (6 -> 3 classes) and D (6 -> 3 types), plain SGD so that an update is ``-lr * grad``."""

    def __init__(self, cfg: AdversarialConfig, seed: int = 0, squash: bool = True, d_lr: float = LR):
        torch.manual_seed(seed)
        self.squash = squash
        self.f, self.c, self.d = nn.Linear(4, 6), nn.Linear(6, 3), TypeHead(6, 3, hidden=0)
        self.x, self.y, self.t = torch.randn(8, 4), torch.randint(0, 3, (8,)), torch.tensor([0, 1, 2] * 2 + [0, 1])
        fc_opt = torch.optim.SGD([*self.f.parameters(), *self.c.parameters()], lr=LR)
        self.update = AdversarialUpdate(cfg, self.d, fc_opt, torch.optim.SGD(self.d.parameters(), lr=d_lr), 100)

    def forward(self, idx):
        feats = self.f(self.x[idx])
        feats = torch.tanh(feats) if self.squash else feats  # unbounded features let F win the min-max outright
        return F.cross_entropy(self.c(feats), self.y[idx]), feats

    def params(self) -> dict[str, torch.Tensor]:
        nets = {"f": self.f, "c": self.c, "d": self.d}
        return {f"{k}.{n}": p.detach().clone() for k, m in nets.items() for n, p in m.named_parameters()}

    def hand_grads(self, idx=slice(None)) -> tuple[dict, dict]:
        """grad(L1) and grad(L2) of every parameter at the current weights."""
        l1, feats = self.forward(idx)
        l2 = F.cross_entropy(self.d(feats), self.t[idx])
        named = [
            (f"{k}.{n}", p) for k, m in (("f", self.f), ("c", self.c), ("d", self.d)) for n, p in m.named_parameters()
        ]
        g1 = torch.autograd.grad(l1, [p for _, p in named], allow_unused=True, retain_graph=True)
        g2 = torch.autograd.grad(l2, [p for _, p in named], allow_unused=True)
        zero = torch.zeros_like
        return ({n: zero(p) if g is None else g for (n, p), g in zip(named, g1, strict=True)},
                {n: zero(p) if g is None else g for (n, p), g in zip(named, g2, strict=True)})  # fmt: skip


def _moved(before: dict, after: dict) -> set[str]:
    return {k[0] for k in before if not torch.equal(before[k], after[k])}


def test_the_d_step_moves_only_d_and_the_fc_step_only_f_and_c():
    net = Tiny(AdversarialConfig(enabled=True))
    l1, feats = net.forward(slice(None))
    before = net.params()
    net.update._d_step(feats.detach(), net.t)
    assert _moved(before, net.params()) == {"d"}
    before = net.params()
    net.update._fc_step(l1, feats, net.t, lam=1.0)
    assert _moved(before, net.params()) == {"f", "c"}
    assert all(p.requires_grad for p in net.d.parameters())  # D is trainable again for its own step


@pytest.mark.parametrize("method", ["sequential", "grl"])
@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_f_moves_by_grad_l1_minus_lambda_grad_l2_and_d_by_grad_l2(method, lam):
    net = Tiny(AdversarialConfig(enabled=True, lambda_=lam, method=method, order="fc_first"))
    g1, g2 = net.hand_grads()
    before = net.params()
    net.update.step(net.forward, net.t)
    after = net.params()
    for name in before:
        if name.startswith("f"):
            expected = -LR * (g1[name] - lam * g2[name])
        elif name.startswith("c"):
            expected = -LR * g1[name]
        else:
            expected = -LR * g2[name]  # D descends L2 on the same (pre-update) features
        torch.testing.assert_close(after[name] - before[name], expected, rtol=1e-4, atol=1e-6)


def test_d_first_measures_the_f_side_loss_with_the_updated_d():
    a = Tiny(AdversarialConfig(enabled=True, order="d_first"))
    b = Tiny(AdversarialConfig(enabled=True, order="fc_first"))
    a.update.step(a.forward, a.t)
    b.update.step(b.forward, b.t)
    pa, pb = a.params(), b.params()
    assert all(torch.allclose(pa[k], pb[k]) for k in pa if k.startswith("d"))  # D sees the same features
    assert not torch.allclose(pa["f.weight"], pb["f.weight"])


def test_per_sample_updates_once_per_sample():
    net = Tiny(AdversarialConfig(enabled=True, update="per_sample"))
    stats = net.update.step(net.forward, net.t)
    assert net.update.steps == 8 and 0 <= float(stats["type_acc"]) <= 1


def _train(adversarial: AdversarialConfig | None, steps: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = build_cam_net(CamNetConfig(arch="tiny", num_classes=3, width_mult=0.25, dropout=0.2))
    cfg = CamTrainConfig(lr=0.05, warmup_epochs=0, epochs=1, blur=0.5, rotate90=0.5, rescale=0.5)
    if adversarial is not None:
        cfg.adversarial_type = adversarial
    recipe = CamRecipe(net, cfg, steps_per_epoch=steps)
    for _ in range(steps):
        x, y, t = torch.randn(6, 3, 32, 32), torch.randint(0, 3, (6,)), torch.tensor([0, 1, 2] * 2)
        recipe.train_step(recipe.augment(x), y, t)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("order", ["d_first", "fc_first"])
def test_lambda_zero_reproduces_plain_training_exactly(order):
    plain = _train(None)
    zero = _train(AdversarialConfig(enabled=True, lambda_=0.0, order=order))
    assert plain.keys() == zero.keys()
    for key in plain:
        assert torch.equal(plain[key], zero[key]), key
    assert not all(torch.equal(plain[k], v) for k, v in _train(AdversarialConfig(enabled=True)).items())


def test_the_fidelity_guard_stops_a_runaway_maximization_with_a_clear_error():
    # D slower than F (here not learning at all): F pushes D's loss up without limit
    net = Tiny(AdversarialConfig(enabled=True, guard_type_loss=3.0), squash=False, d_lr=0.0)
    with pytest.raises(AdversarialDivergence, match=r"image-type loss L2 reached .* > guard 3"):
        for _ in range(200):
            net.update.step(net.forward, net.t)


def test_non_finite_losses_always_stop():
    net = Tiny(AdversarialConfig(enabled=True, preset="production"))
    with torch.no_grad():
        net.f.weight[0, 0] = float("nan")
    with pytest.raises(AdversarialDivergence, match="no longer finite"):
        net.update.step(net.forward, net.t)


def test_the_production_preset_ramps_lambda_and_clips_the_f_side_at_chance():
    cfg = AdversarialConfig(enabled=True, preset="production")
    assert cfg.coefficient(0.0) == 0.0 and cfg.coefficient(1.0) == pytest.approx(1.0, abs=1e-4)
    assert cfg.clip() == pytest.approx(math.log(3))
    assert AdversarialConfig(enabled=True).coefficient(0.0) == 1.0 and AdversarialConfig().clip() is None
    assert dann_schedule(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    with pytest.raises(ValueError, match="needs method: sequential"):
        AdversarialConfig(method="grl", clip_type_loss=1.0).clip()
    assert AdversarialConfig(method="grl", preset="production").clip() is None


def test_a_clipped_f_side_gets_no_type_gradient_once_d_is_at_chance():
    net = Tiny(AdversarialConfig(enabled=True, clip_type_loss=0.0, order="fc_first"))  # any L2 is above 0
    g1, _ = net.hand_grads()
    before = net.params()
    net.update.step(net.forward, net.t)
    torch.testing.assert_close(net.params()["f.weight"] - before["f.weight"], -LR * g1["f.weight"])


def test_grad_reverse_is_identity_forward_and_negated_backward():
    x = torch.randn(5, requires_grad=True)
    y = grad_reverse(x, 0.5)
    assert torch.equal(y, x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((5,), -0.5))


def test_cam_net_never_builds_d_and_its_outputs_do_not_change():
    net = build_cam_net(CamNetConfig(arch="tiny", num_classes=3, width_mult=0.25))
    assert not any(isinstance(m, TypeHead) for m in net.modules())
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    logits, feats = net(x, with_features=True)
    assert torch.equal(logits, net(x)) and feats.shape == (2, net.num_features)


def test_the_production_preset_survives_what_stops_the_fidelity_one():
    net = Tiny(AdversarialConfig(enabled=True, preset="production", guard_type_loss=3.0), squash=False, d_lr=0.0)
    for _ in range(200):
        stats = net.update.step(net.forward, net.t)
    assert float(stats["loss_type"]) < 3.0
