"""The suppress-fuse-select block: a plug-in for CAM backbones that widens and cleans the class activation.

Given a post-ReLU feature map ``F`` of shape ``(B, C, H, W)`` and ``M_c`` the spatial maximum of channel ``c`` of
each image:

* branch 1 (:class:`DiscriminativeSuppression`) removes the most discriminative activations and boosts the rest:
  ``D = M_c * g(F / M_c)`` where ``F < cr * M_c`` and ``D = 0`` where ``F >= cr * M_c``;
* branch 2 (:class:`IrrelevantSuppression`) removes weak, background activations:
  ``S = F`` where ``F >= t * M_c`` and ``S = 0`` where ``F < t * M_c``;
* fusion concatenates ``[D, S]`` on channels (``2C``) and :class:`FeatureSelection` re-weights the ``2C`` channels
  with learned weights from global max pooling, then reduces them to ``C`` with a 1x1 convolution.

The patent's formulas for ``D`` and ``alpha`` were lost in the source text; ``g`` is reconstructed so that it has
every stated property: ``g(0) = 0``, concave, ``g(x) >= x`` below the threshold and ``g(cr) = cr`` (the curve meets
``D = F`` exactly at ``F = cr * M_c``), with ``alpha`` a closed-form function of ``cr`` (:func:`alpha_for`).

Choices the patent leaves open, all recorded here:

* comparisons follow the claims: ``>=`` removes in branch 1 (the element equal to the threshold is removed) and
  ``<`` removes in branch 2 (the element equal to the threshold is kept);
* the block expects post-ReLU features (``F >= 0``); negative inputs, if any, give ``D = 0`` (``x`` is clamped at 0)
  and are removed by branch 2 as long as ``t > 0``;
* ``M_c`` is detached by default (``SFSConfig.detach_max``): thresholds and the normalization are treated as
  constants, gradients flow to ``F`` through ``g`` (with the mask constant) and through the identity of branch 2;
* channels whose maximum is ``<= eps`` output zeros in both branches (no division by zero, no NaN);
* ReLU between the two FC layers (as in SE-Net; ``fc_act="none"`` removes it), both FC layers and the 1x1
  convolution have biases, and nothing (no BN, no ReLU, no residual) follows the 1x1 convolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models.layers import config_from_dict, global_max_pool


def _alpha_exp(cr: float) -> float:
    return 1.0 if cr == 0 else -math.log1p(-cr) / cr


def _alpha_tanh(cr: float) -> float:
    return 1.0 if cr == 0 else math.atanh(cr) / cr


_ALPHAS: dict[str, Callable[[float], float]] = {"exp": _alpha_exp, "tanh": _alpha_tanh}


def alpha_for(curve: str, cr: float) -> float:
    """Curvature ``alpha`` that makes the boost curve meet ``D = F`` at ``x = cr``.

    ``exp``: ``-ln(1 - cr) / cr``; ``tanh``: ``artanh(cr) / cr``; both tend to 1 as ``cr -> 0`` (used at 0).

    Raises:
        ValueError: unknown curve, or ``cr`` outside ``[0, 1)`` (``alpha`` is infinite at 1).
    """
    if curve not in _ALPHAS:
        raise ValueError(f"unknown boost curve {curve!r}; valid: {sorted(_ALPHAS)}")
    if not 0.0 <= cr < 1.0:
        raise ValueError(f"cr must be in [0, 1), got {cr}")
    return _ALPHAS[curve](cr)


def _exp_curve(x: Tensor, cr: float) -> Tensor:
    return -torch.expm1(-alpha_for("exp", cr) * x)  # 1 - exp(-alpha x)


def _tanh_curve(x: Tensor, cr: float) -> Tensor:
    return torch.tanh(alpha_for("tanh", cr) * x)


BOOST_CURVES: dict[str, Callable[[Tensor, float], Tensor]] = {"exp": _exp_curve, "tanh": _tanh_curve}
"""Boost curves ``g(x, cr)`` on ``x = F / M_c`` in ``[0, 1]``: concave, ``g(0) = 0``, ``g(cr) = cr``."""

FC_ACTS = ("relu", "none")


@dataclass
class SFSConfig:
    """Settings of one suppress-fuse-select block.

    Attributes:
        cr: branch 1 threshold as a fraction of the channel maximum, in ``[0, 1)`` (the patent's experiment: 0.8).
        t: branch 2 threshold as a fraction of the channel maximum, in ``(0, 1)`` (the patent's example: 0.4).
        curve: boost curve of branch 1, a key of :data:`BOOST_CURVES`.
        eps: channels whose maximum is ``<= eps`` output zeros.
        detach_max: use the channel maximum without gradient.
        fc_act: activation between the two FC layers of the feature selection, ``"relu"`` or ``"none"``.
        init: ``"default"`` (PyTorch's initialization of the FC layers and the 1x1 convolution) or
            ``"passthrough"`` (our addition, for a block inserted into a pretrained network): the channel weights
            start at a constant and the 1x1 convolution takes only branch 2, scaled back, so at the start the
            block passes its input through minus its weakest activations (``F < t * M_c``). Branch 1's columns
            start at zero and are learned from there; the block's formulas do not change.
    """

    cr: float = 0.8
    t: float = 0.4
    curve: str = "exp"
    eps: float = 1e-6
    detach_max: bool = True
    fc_act: str = "relu"
    init: str = "default"

    def __post_init__(self) -> None:
        alpha_for(self.curve, self.cr)  # validates curve and cr
        if not 0.0 < self.t < 1.0:
            raise ValueError(f"t must be in (0, 1), got {self.t}")
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if self.fc_act not in FC_ACTS:
            raise ValueError(f"unknown fc_act {self.fc_act!r}; valid: {list(FC_ACTS)}")
        if self.init not in ("default", "passthrough"):
            raise ValueError(f"init must be 'default' or 'passthrough', got {self.init!r}")


def sfs_config_from_dict(d: Mapping[str, Any] | SFSConfig) -> SFSConfig:
    """An :class:`SFSConfig` from a plain dict; unknown keys raise ``ValueError`` naming the key."""
    return config_from_dict(SFSConfig, d, "sfs")


def _channel_max(f: Tensor, detach: bool) -> Tensor:
    m = f.amax(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    return m.detach() if detach else m


class DiscriminativeSuppression(nn.Module):
    """Branch 1: zero activations ``>= cr * M_c``, boost the ones below with ``M_c * g(F / M_c)``.

    Args:
        cr: threshold fraction in ``[0, 1)``.
        curve: boost curve name (:data:`BOOST_CURVES`).
        eps: channels with maximum ``<= eps`` give zeros.
        detach_max: treat ``M_c`` as a constant in the backward pass.
    """

    def __init__(self, cr: float = 0.8, curve: str = "exp", eps: float = 1e-6, detach_max: bool = True):
        super().__init__()
        alpha_for(curve, cr)
        self.cr, self.curve, self.eps, self.detach_max = cr, curve, eps, detach_max

    def forward(self, f: Tensor) -> Tensor:
        m = _channel_max(f, self.detach_max)  # (B, C, 1, 1)
        keep = (f < self.cr * m) & (m > self.eps)
        m_safe = m.clamp_min(self.eps)
        boosted = m_safe * BOOST_CURVES[self.curve]((f / m_safe).clamp_min(0.0), self.cr)
        return torch.where(keep, boosted, torch.zeros_like(f))

    def extra_repr(self) -> str:
        return f"cr={self.cr}, curve={self.curve!r}, alpha={alpha_for(self.curve, self.cr):.4f}"


class IrrelevantSuppression(nn.Module):
    """Branch 2: keep activations ``>= t * M_c`` unchanged, zero the ones below.

    Args:
        t: threshold fraction in ``(0, 1)``.
        eps: channels with maximum ``<= eps`` give zeros.
        detach_max: treat ``M_c`` as a constant in the backward pass.
    """

    def __init__(self, t: float = 0.4, eps: float = 1e-6, detach_max: bool = True):
        super().__init__()
        self.t, self.eps, self.detach_max = t, eps, detach_max

    def forward(self, f: Tensor) -> Tensor:
        m = _channel_max(f, self.detach_max)  # (B, C, 1, 1)
        keep = (f >= self.t * m) & (m > self.eps)
        return torch.where(keep, f, torch.zeros_like(f))

    def extra_repr(self) -> str:
        return f"t={self.t}"


class FeatureSelection(nn.Module):
    """Learned channel re-weighting of the fused map, then a 1x1 reduction back to ``C`` channels.

    Global max pooling (not average pooling as in SE-Net) -> FC ``2C -> C`` -> activation -> FC ``C -> 2C`` ->
    sigmoid gives one weight per fused channel; the weighted map goes through a 1x1 convolution ``2C -> C``.

    Args:
        channels: ``C``, the channels of the block's input (the fused map has ``2C``).
        fc_act: ``"relu"`` or ``"none"`` between the two FC layers.
    """

    def __init__(self, channels: int, fc_act: str = "relu"):
        super().__init__()
        if fc_act not in FC_ACTS:
            raise ValueError(f"unknown fc_act {fc_act!r}; valid: {list(FC_ACTS)}")
        self.fc1 = nn.Linear(2 * channels, channels)
        self.act = nn.ReLU() if fc_act == "relu" else nn.Identity()
        self.fc2 = nn.Linear(channels, 2 * channels)
        self.reduce = nn.Conv2d(2 * channels, channels, kernel_size=1)
        self.last_weights: Tensor | None = None

    def channel_weights(self, m: Tensor) -> Tensor:
        """Sigmoid weights ``(B, 2C)`` of the fused map ``m`` ``(B, 2C, H, W)``."""
        return torch.sigmoid(self.fc2(self.act(self.fc1(global_max_pool(m)))))

    @torch.no_grad()
    def init_passthrough(self, gate_logit: float = 4.0) -> None:
        """Constant channel weights ``sigmoid(gate_logit)`` and a 1x1 convolution ``[0 | I / weight]``: the output
        is branch 2 (``S``) exactly, whatever the input."""
        channels = self.reduce.out_channels
        nn.init.zeros_(self.fc2.weight)
        nn.init.constant_(self.fc2.bias, gate_logit)
        weight = torch.zeros_like(self.reduce.weight)  # (C, 2C, 1, 1)
        gate = torch.sigmoid(torch.tensor(gate_logit))
        weight[torch.arange(channels), channels + torch.arange(channels)] = 1.0 / gate
        self.reduce.weight.copy_(weight)
        nn.init.zeros_(self.reduce.bias)

    def forward(self, m: Tensor) -> Tensor:
        w = self.channel_weights(m)  # (B, 2C)
        self.last_weights = w.detach()
        return self.reduce(m * w[:, :, None, None])  # (B, C, H, W)


class SuppressFuseSelect(nn.Module):
    """The plug-in block: ``F (B, C, H, W) -> F* (B, C, H, W)``.

    Args:
        channels: ``C``.
        cfg: block settings; defaults to ``SFSConfig()``.
    """

    def __init__(self, channels: int, cfg: SFSConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg if cfg is not None else SFSConfig()
        self.suppress_top = DiscriminativeSuppression(cfg.cr, cfg.curve, cfg.eps, cfg.detach_max)
        self.suppress_low = IrrelevantSuppression(cfg.t, cfg.eps, cfg.detach_max)
        self.select = FeatureSelection(channels, cfg.fc_act)
        if cfg.init == "passthrough":
            self.select.init_passthrough()

    @property
    def last_weights(self) -> Tensor | None:
        """Sigmoid channel weights ``(B, 2C)`` of the last forward (``[:, :C]`` for D, ``[:, C:]`` for S)."""
        return self.select.last_weights

    def forward(self, f: Tensor) -> Tensor:
        fused = torch.cat([self.suppress_top(f), self.suppress_low(f)], dim=1)  # (B, 2C, H, W)
        return self.select(fused)
