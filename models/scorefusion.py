"""Seed 003: one network per modality, and their scores fused with fitted weights.

Each modality ``m`` of a sample goes through its own EfficientNet (2D for images and maps, 3D for volumes and
clips, :mod:`models.efficientnet`) ending in one logit; its score ``S_m`` is the sigmoid probability of the
positive class. The fused score (claims 5-6, "sum and average") is

* ``mode: literal``: ``sum_m w_m * S_m / M`` with ``sum_m w_m = 1``, exactly as printed. It lies in ``[0, 1/M]``,
  so the decision threshold is scaled by ``1/M`` and the loss is taken on ``M`` times the score (the patent's own
  thresholds would otherwise be unreachable);
* ``mode: average`` (default, our reading): ``sum_m w_m * S_m``, a probability, thresholds as they are.

Both give the same ranking, so the same AUROC and the same fitted weights. Weights are fitted on scores that are
already computed (the embodiment's way): :func:`weight_grid` lists every weight vector in integer tenths summing
to one (36 for ``M = 3``, each weight at least 0.1, as the embodiment's 0.1 ... 0.8), and :func:`fit_weights_grid`
keeps the best by a metric the caller passes (AUROC, from scikit-learn, in ``jobs/``); :func:`fit_weights_loss` is
claim 7's loop: binary cross-entropy of the fused score against the label, stop when it is at or below
``loss_threshold``, else one Adam step on the weights (kept on the simplex by a softmax), at most ``max_iters``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from models.efficientnet import EfficientNet, EfficientNetConfig, build_efficientnet

Mode = Literal["literal", "average"]


@dataclass
class ModalitySpec:
    """One modality's network: ``dims`` 2 (an image, ``(C, H, W)``) or 3 (a volume or clip, ``(C, D, H, W)``);
    ``init`` as :func:`models.efficientnet.build_efficientnet` takes it, recorded so the checkpoint says it."""

    name: str
    dims: Literal[2, 3] = 2
    in_channels: int = 3
    variant: Literal["lite0", "b0"] = "lite0"
    init: Literal["imagenet", "inflate", "scratch"] = "imagenet"


@dataclass
class ScoreFusionConfig:
    modalities: list[ModalitySpec] = field(default_factory=list)
    mode: Mode = "average"
    threshold: float = 0.5  # on the average-mode scale; literal mode divides it by M
    dropout: float = 0.2
    drop_connect: float = 0.2


def fused_score(scores, weights, mode: Mode = "average"):
    """``sum_m w_m * S_m`` (``average``) or that divided by ``M`` (``literal``). ``scores``: ``(N, M)`` (NumPy or
    torch), ``weights``: ``(M,)`` summing to 1; NaN scores (a modality missing) are the caller's to handle."""
    m = scores.shape[-1]
    fused = (scores * weights).sum(-1)
    return fused / m if mode == "literal" else fused


def decision_threshold(threshold: float, m: int, mode: Mode) -> float:
    """The class threshold on the fused scale: ``threshold`` in average mode, ``threshold / M`` in literal mode."""
    return threshold / m if mode == "literal" else threshold


def weight_parts(m: int, step: float = 0.1) -> np.ndarray:
    """Every way to deal ``1 / step`` equal parts to ``m`` modalities, each at least one part: ``(K, m)`` integers,
    every row summing exactly to ``1 / step``. Counting in integers keeps the grid exact (``0.1 + 0.2 + 0.7`` is
    not ``1.0`` in floating point)."""
    parts = round(1 / step)
    if not math.isclose(parts * step, 1.0) or parts < m:
        raise ValueError(f"step {step} must divide 1 into at least {m} parts")
    rows = [c for c in itertools.product(range(1, parts + 1), repeat=m) if sum(c) == parts]
    return np.asarray(rows, dtype=np.int64)


def weight_grid(m: int, step: float = 0.1) -> np.ndarray:
    """:func:`weight_parts` as weights, ``(K, m)`` floats (each row sums to 1 up to rounding)."""
    return weight_parts(m, step) / round(1 / step)


def fit_weights_grid(
    scores: np.ndarray, labels: np.ndarray, metric: Callable[[np.ndarray, np.ndarray], float], step: float = 0.1
) -> tuple[np.ndarray, float]:
    """The grid's weights with the highest ``metric(labels, fused)``, and that value; ties keep the first (the most
    even rows come later, so a tie never moves away from the first maximum found)."""
    best, best_value = None, -math.inf
    for w in weight_grid(scores.shape[1], step):
        value = metric(labels, fused_score(scores, w))
        if value > best_value:
            best, best_value = w, value
    return best, float(best_value)


@dataclass
class LossFit:
    weights: np.ndarray
    loss: float
    iters: int
    converged: bool  # the loss reached the threshold


def fit_weights_loss(
    scores: np.ndarray, labels: np.ndarray, mode: Mode = "average", loss_threshold: float = 0.0,
    max_iters: int = 500, lr: float = 0.05,
) -> LossFit:  # fmt: skip
    """Claim 7: compute the loss of the fused score; at or below ``loss_threshold`` stop, else adjust the weights
    and compute again, at most ``max_iters`` adjustments. Weights start equal and stay on the simplex (a softmax
    of free logits); the loss is the mean binary cross-entropy (the patent's printed formula has a typo)."""
    s = torch.as_tensor(scores, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.float64)
    logits = torch.zeros(s.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=lr)
    m = s.shape[1]
    loss_value = math.inf
    for it in range(max_iters + 1):
        fused = fused_score(s, torch.softmax(logits, 0), mode) * (m if mode == "literal" else 1)
        loss = nn.functional.binary_cross_entropy(fused.clamp(1e-7, 1 - 1e-7), y)
        loss_value = float(loss.detach())
        if loss_value <= loss_threshold or it == max_iters:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    weights = torch.softmax(logits.detach(), 0).numpy()
    return LossFit(weights, loss_value, it, loss_value <= loss_threshold)


class ScoreFusionNet(nn.Module):
    """The per-modality networks (``nets[name]``, one logit each) and the fused score with stored ``weights``."""

    def __init__(self, cfg: ScoreFusionConfig, weights: Sequence[float] | None = None, pretrained: bool = True):
        super().__init__()
        if len(cfg.modalities) < 2:
            raise ValueError("seed 003 fuses at least two modalities")
        self.cfg = cfg
        self.nets = nn.ModuleDict({s.name: modality_net(s, cfg, pretrained) for s in cfg.modalities})
        m = len(cfg.modalities)
        w = torch.full((m,), 1.0 / m) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        self.register_buffer("weights", w)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.cfg.modalities]

    def modality_scores(self, inputs: dict[str, Tensor]) -> Tensor:
        """``(N, M)`` probabilities, one column per modality in config order."""
        return torch.stack([torch.sigmoid(self.nets[n](inputs[n]).squeeze(-1)) for n in self.names], dim=-1)

    def forward(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        scores = self.modality_scores(inputs)
        return scores, fused_score(scores, self.weights, self.cfg.mode)


def modality_net(spec: ModalitySpec, cfg: ScoreFusionConfig, pretrained: bool = True) -> EfficientNet:
    """One modality's EfficientNet with one output logit; ``pretrained`` false skips loading ImageNet weights
    (a checkpoint's weights replace them anyway)."""
    net_cfg = EfficientNetConfig(variant=spec.variant, dims=spec.dims, in_channels=spec.in_channels,
                                 num_classes=1, dropout=cfg.dropout, drop_connect=cfg.drop_connect)  # fmt: skip
    return build_efficientnet(net_cfg, spec.init if pretrained else "scratch")


def scorefusion_config_from_dict(config: dict) -> ScoreFusionConfig:
    data = dict(config)
    data["modalities"] = [ModalitySpec(**s) for s in data.get("modalities", [])]
    return ScoreFusionConfig(**data)


def build_scorefusion(config: dict) -> ScoreFusionNet:
    """The checkpoint builder: the architecture from ``config``, weights left to the checkpoint."""
    return ScoreFusionNet(scorefusion_config_from_dict(config), pretrained=False)


def config_dict(cfg: ScoreFusionConfig) -> dict:
    return dataclasses.asdict(cfg)
