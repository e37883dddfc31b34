"""The adversarial image-type head of seed 002: one classifier for photos, sketches and cartoons.

Three networks (claim 6): a feature extractor F, the content classifier C and an image-type classifier D, with F's
features feeding C and D in parallel. With L1 the content loss and L2 the image-type loss, D is adjusted with L2 and
F and C with the loss difference ``L_diff = L1 - lambda * L2`` (claims 4-6), both ordinary descent steps: D learns
to tell the types apart while F learns features it cannot tell apart, so that the features of a photographed, a
hand-drawn and a cartoon apple meet. D serves training only; nothing at inference builds or runs it.

Choices where the patent is silent, each configurable in :class:`AdversarialConfig`:

- Both losses are cross-entropy (the patent names none); ``lambda`` defaults to the implied 1.
- ``method: sequential`` (the claims' "one of the losses, then the other"): the batch is predicted once (S12), then
  the two updates run one after the other (S13) on that prediction. ``order: d_first`` updates D first, so the
  F/C step's L2 is measured by the updated D; ``fc_first`` measures it with D before its update. ``method: grl``
  is the flagged alternative: a gradient-reversal layer between F and D, one backward pass for all three networks.
- ``update: batch`` makes one update per batch; ``per_sample`` one per sample (the text allows both).
- Maximizing an unbounded cross-entropy can diverge and the patent has no safeguard. ``preset: fidelity`` keeps
  the patent's setting (constant lambda, no clipping) with a divergence guard that stops training with a clear
  error. ``preset: production`` is our addition: the DANN schedule ``2 / (1 + exp(-10 p)) - 1`` over training
  progress ``p`` ramps lambda up from 0, and the F-side L2 is clipped at the chance-level loss ``ln(n_types)``:
  F is pushed until D is at chance, no further.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PRESETS: dict[str, dict] = {
    "fidelity": {"schedule": "constant", "clip_type_loss": None, "guard": True},
    "production": {"schedule": "dann", "clip_type_loss": "chance", "guard": True},
}


def _yaml_name(name: str) -> str:
    return name.rstrip("_")  # ``lambda_`` is ``lambda`` in config files


@dataclass
class AdversarialConfig:
    """``train.adversarial_type``: the image-type head and how it trains (see the module docstring).

    ``schedule``, ``clip_type_loss`` and ``guard`` left unset take the preset's value. ``clip_type_loss``: a number,
    ``"chance"`` (``ln(n_types)``) or ``None`` (no clipping; the sequential method only). ``guard_type_loss``: the
    F-side L2 above which the guard stops training (default ``10 * ln(n_types)``); non-finite losses always stop it.
    ``hidden``: D's hidden width (0: one linear layer). ``d_lr_mult``: D's learning rate against the content one.
    """

    enabled: bool = False
    preset: Literal["fidelity", "production"] = "fidelity"
    lambda_: float = 1.0
    method: Literal["sequential", "grl"] = "sequential"
    order: Literal["d_first", "fc_first"] = "d_first"
    update: Literal["batch", "per_sample"] = "batch"
    schedule: Literal["constant", "dann"] | None = None
    clip_type_loss: float | Literal["chance"] | None = None
    guard: bool | None = None
    guard_type_loss: float | None = None
    hidden: int = 256
    d_lr_mult: float = 1.0
    image_types: tuple[str, ...] = ("photo", "sketch", "cartoon")
    __pydantic_config__ = {"alias_generator": _yaml_name, "populate_by_name": True, "extra": "forbid"}

    def __post_init__(self) -> None:
        self.image_types = tuple(self.image_types)
        if self.lambda_ < 0:
            raise ValueError(f"adversarial_type.lambda must be >= 0, got {self.lambda_}")
        if len(self.image_types) < 2:
            raise ValueError("adversarial_type.image_types needs at least two types to tell apart")
        if self.hidden < 0 or self.d_lr_mult <= 0:
            raise ValueError("adversarial_type: hidden must be >= 0 and d_lr_mult > 0")

    def resolved(self, name: str) -> object:
        """A setting, from the preset when it is unset here."""
        value = getattr(self, name)
        return PRESETS[self.preset][name] if value is None else value

    def clip(self) -> float | None:
        """The clip of the F-side L2, ``None`` for none. The reversal layer cannot clip one side only."""
        value = self.resolved("clip_type_loss")
        if self.method == "grl":
            if self.clip_type_loss is not None:
                raise ValueError("adversarial_type.clip_type_loss needs method: sequential (a GRL has one loss)")
            return None
        return math.log(len(self.image_types)) if value == "chance" else value

    def coefficient(self, progress: float) -> float:
        """lambda at training progress ``progress`` in [0, 1]."""
        if self.resolved("schedule") == "dann":
            return self.lambda_ * dann_schedule(progress)
        return self.lambda_


def dann_schedule(progress: float) -> float:
    """Ganin and Lempitsky's ramp ``2 / (1 + exp(-10 p)) - 1``: 0 at the start, close to 1 from ``p`` ~ 0.5."""
    return 2.0 / (1.0 + math.exp(-10.0 * min(max(progress, 0.0), 1.0))) - 1.0


class AdversarialDivergence(RuntimeError):
    """The F side of the min-max ran away: the image-type loss grew without bound or a loss stopped being finite."""


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, coeff: float) -> Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.coeff * grad, None


def grad_reverse(x: Tensor, coeff: float = 1.0) -> Tensor:
    """Identity forward; the backward multiplies the gradient by ``-coeff``."""
    return _GradReverse.apply(x, coeff)


class TypeHead(nn.Module):
    """D: pooled features ``(B, K)`` -> image-type logits ``(B, T)``; an MLP, or one linear layer if ``hidden`` 0."""

    def __init__(self, in_features: int, n_types: int, hidden: int = 256):
        super().__init__()
        if hidden:
            self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_types))
        else:
            self.net = nn.Linear(in_features, n_types)

    def forward(self, feats: Tensor) -> Tensor:
        return self.net(feats)


def build_type_head(in_features: int, cfg: AdversarialConfig) -> TypeHead:
    """D, initialized without touching torch's global generator, so that adding D with lambda 0 leaves every other
    random draw of a run (augmentation, dropout, shuffling) where it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(len(cfg.image_types) * 7919 + in_features)
        return TypeHead(in_features, len(cfg.image_types), cfg.hidden)


def _average_grads(module: nn.Module) -> None:
    """D lives outside the DDP-wrapped model: average its gradients over the workers by hand."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= dist.get_world_size()


Forward = Callable[[Tensor], tuple[Tensor, Tensor]]  # row indices -> (content loss L1, F's features (b, K))


class AdversarialUpdate:
    """The training step with D, for any F/C split: the caller's ``forward(idx)`` runs F and C on the rows ``idx``
    of its batch (through the DDP wrapper when there is one) and returns L1 and F's features.

    Args:
        cfg: the settings.
        head: D.
        fc_optimizer: the optimizer of F and C (its scheduler stays with the caller).
        d_optimizer: D's optimizer.
        total_steps: updates over the whole run, for the schedule (per-sample updates count one each).
    """

    def __init__(self, cfg: AdversarialConfig, head: nn.Module, fc_optimizer, d_optimizer, total_steps: int):
        self.cfg, self.head, self.fc_optimizer, self.d_optimizer = cfg, head, fc_optimizer, d_optimizer
        self.total_steps, self.steps = max(1, total_steps), 0
        self.clip = cfg.clip()
        self.guard = bool(cfg.resolved("guard"))
        self.guard_loss = cfg.guard_type_loss or 10 * math.log(len(cfg.image_types))

    def step(self, forward: Forward, types: Tensor) -> dict[str, Tensor]:
        """One batch: one update, or one per sample. Returns the batch's mean L1, L2 (D's loss), D's accuracy on
        the types and the lambda used."""
        n = len(types)
        groups = [torch.arange(n)] if self.cfg.update == "batch" else [torch.tensor([i]) for i in range(n)]
        stats = [self._update(forward, idx, types[idx.to(types.device)]) for idx in groups]
        return {k: torch.stack([s[k] for s in stats]).mean() for k in stats[0]}

    def _update(self, forward: Forward, idx: Tensor, types: Tensor) -> dict[str, Tensor]:
        lam = self.cfg.coefficient(self.steps / self.total_steps)
        self.steps += 1
        l1, feats = forward(idx)
        if self.cfg.method == "grl":
            l2, logits = self._grl_step(l1, feats, types, lam)
        elif self.cfg.order == "d_first":
            l2, logits = self._d_step(feats.detach(), types)
            self._fc_step(l1, feats, types, lam)
        else:
            self._fc_step(l1, feats, types, lam)
            l2, logits = self._d_step(feats.detach(), types)
        acc = (logits.argmax(1) == types).float().mean()
        return {"loss_content": l1.detach(), "loss_type": l2, "type_acc": acc, "lambda": torch.tensor(lam)}

    def _d_step(self, feats: Tensor, types: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.head(feats)
        loss = F.cross_entropy(logits.float(), types)
        self.d_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _average_grads(self.head)
        self.d_optimizer.step()
        return loss.detach(), logits.detach()

    def _fc_step(self, l1: Tensor, feats: Tensor, types: Tensor, lam: float) -> None:
        self.head.requires_grad_(False)  # the F/C step reads D, never adjusts it
        try:
            l2 = F.cross_entropy(self.head(feats).float(), types)
        finally:
            self.head.requires_grad_(True)
        self._check(l1, l2)
        f_side = l2 if self.clip is None else l2.clamp(max=self.clip)
        self.fc_optimizer.zero_grad(set_to_none=True)
        (l1 - lam * f_side).backward()
        self.fc_optimizer.step()

    def _grl_step(self, l1: Tensor, feats: Tensor, types: Tensor, lam: float) -> tuple[Tensor, Tensor]:
        logits = self.head(grad_reverse(feats, lam))
        l2 = F.cross_entropy(logits.float(), types)
        self._check(l1, l2)
        self.fc_optimizer.zero_grad(set_to_none=True)
        self.d_optimizer.zero_grad(set_to_none=True)
        (l1 + l2).backward()
        _average_grads(self.head)
        self.fc_optimizer.step()
        self.d_optimizer.step()
        return l2.detach(), logits.detach()

    def _check(self, l1: Tensor, l2: Tensor) -> None:
        l1, l2 = l1.detach(), l2.detach()
        if not (torch.isfinite(l1) and torch.isfinite(l2)):
            raise AdversarialDivergence(
                f"adversarial training diverged at update {self.steps}: L1 {float(l1):.4g}, L2 {float(l2):.4g} "
                "(a loss is no longer finite); lower adversarial_type.lambda or use preset: production"
            )
        if self.guard and float(l2) > self.guard_loss:
            raise AdversarialDivergence(
                f"adversarial training diverged at update {self.steps}: the image-type loss L2 reached "
                f"{float(l2):.4g} > guard {self.guard_loss:.4g}. Maximizing an unbounded cross-entropy (the patent's "
                "L1 - L2 at lambda 1) lets F push D's loss up without limit; use preset: production (DANN schedule, "
                "F-side L2 clipped at chance), a smaller lambda, or raise adversarial_type.guard_type_loss"
            )

    def state_dict(self) -> dict:
        return {"head": self.head.state_dict(), "d_optimizer": self.d_optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.steps = int(state["steps"])
