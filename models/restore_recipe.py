"""Training recipe of the restoration GAN: the joint loss, alternating D and G updates, the generator's EMA.

The method's joint loss is ``L = k1 * L1 + k2 * L_GAN`` with ``k1 = 1`` and ``k2 = 1e-4``; ``L1`` is the mean
absolute pixel difference between ``G(I_s)`` and ``I_t``. It writes the adversarial term as
``L_GAN = -sum log D(I_t, G(I_s))`` and says D returns "several authenticity results" (one for each image) whose
logs are summed. That admits several readings, so the term is pluggable (``adversarial``):

* ``nonsaturating`` (default): the usual generator loss ``-log D(G(I_s))`` (BCE of the fake logits against
  "real"), D trained with BCE to call ``I_t`` real and ``G(I_s)`` fake.
* ``literal``: ``-[log D(I_t) + log D(G(I_s))]`` as written; the ``I_t`` term has no gradient for G, so it only
  shifts the value. D as above.
* ``relativistic``: ESRGAN's relativistic average loss, D judging ``I_t`` against ``G(I_s)`` (the two-argument
  reading of ``D(I_t, G(I_s))``), for D and G alike.
* ``none``: no discriminator; the L1-only generator.

Every reduction is a mean (over pixels, and over the discriminator's patch logits), which is what ``k2 = 1e-4``
presumes next to a per-pixel L1. The method calls D "pre-trained" yet trains it adversarially; we train both from
scratch, D first in each step. ``warmup_steps`` trains G on the pixel loss alone first (D is not updated then), the
usual start for restoration GANs. ``perceptual`` adds the L1 distance between feature maps of a frozen feature
network (not in the method; with the Real-ESRGAN-like settings in ``configs/``). The EMA of G's weights is what
checkpoints ship for inference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ADVERSARIAL = ("nonsaturating", "literal", "relativistic", "none")


@dataclass
class RestoreTrainConfig:
    """Optimization settings.

    Attributes:
        epochs: passes over the training patches.
        batch_size: pairs per update (per worker).
        lr_g: Adam learning rate of the generator.
        lr_d: Adam learning rate of the discriminator.
        beta1: Adam's first beta (both networks).
        beta2: Adam's second beta.
        k1: weight of the pixel L1 loss (the method's 1).
        k2: weight of the adversarial loss (the method's 1e-4).
        perceptual: weight of the feature-space L1 loss (0: off, as in the method).
        adversarial: one of :data:`ADVERSARIAL`.
        warmup_steps: generator steps on the pixel loss alone before D and the adversarial term start.
        ema_decay: decay of the generator's weight average (0: no EMA, the raw weights ship).
        grad_clip: clip each network's gradient norm (0: no clipping).
    """

    epochs: int = 20
    batch_size: int = 16
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.99
    k1: float = 1.0
    k2: float = 1e-4
    perceptual: float = 0.0
    adversarial: str = "nonsaturating"
    warmup_steps: int = 0
    ema_decay: float = 0.999
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        if self.adversarial not in ADVERSARIAL:
            raise ValueError(f"adversarial must be one of {ADVERSARIAL}, got {self.adversarial!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


def _bce(logits: Tensor, real: bool) -> Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def discriminator_loss(kind: str, real: Tensor, fake: Tensor) -> Tensor:
    """D's loss from its logits on sample images (``real``) and generated ones (``fake``, detached)."""
    if kind == "relativistic":
        return (_bce(real - fake.mean(), True) + _bce(fake - real.mean(), False)) / 2
    return _bce(real, True) + _bce(fake, False)


def generator_adversarial_loss(kind: str, real: Tensor, fake: Tensor) -> Tensor:
    """``L_GAN`` for G from D's logits on the sample images (no gradient needed) and on G's output."""
    if kind == "nonsaturating":
        return _bce(fake, True)
    if kind == "literal":
        return _bce(real, True) + _bce(fake, True)  # -[mean log D(I_t) + mean log D(G(I_s))]
    if kind == "relativistic":
        return (_bce(real - fake.mean(), False) + _bce(fake - real.mean(), True)) / 2
    raise ValueError(f"no adversarial loss for {kind!r}")


def perceptual_loss(feature_net: nn.Module, fake: Tensor, real: Tensor) -> Tensor:
    """Mean over the feature network's stages of the L1 distance between the two images' maps."""
    with torch.no_grad():
        targets = feature_net.features(real)
    maps = feature_net.features(fake)
    return sum(F.l1_loss(m, t) for m, t in zip(maps, targets, strict=True)) / len(maps)


def joint_loss(cfg: RestoreTrainConfig, l1: Tensor, adversarial: Tensor | None, perceptual: Tensor | None) -> Tensor:
    """``k1 * L1 + k2 * L_GAN (+ perceptual * L_perc)``; a missing term counts 0."""
    loss = cfg.k1 * l1
    if adversarial is not None:
        loss = loss + cfg.k2 * adversarial
    if perceptual is not None:
        loss = loss + cfg.perceptual * perceptual
    return loss


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (or the network itself)."""
    return getattr(model, "module", model)  # DistributedDataParallel keeps the network in .module


class EMA:
    """Exponential moving average of a network's parameters (buffers are copied); warms up as ``(1+n)/(10+n)``."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        source = unwrap(model).state_dict()
        for name, value in self.model.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[name].detach(), alpha=1 - d)
            else:
                value.copy_(source[name])


class RestoreRecipe:
    """One ``train_step``: a D update on sample vs. generated images, then a G update on the joint loss.

    ``generator`` and ``discriminator`` may be DDP-wrapped. G's step calls the unwrapped discriminator with its
    parameters frozen, so the adversarial gradient reaches G only and D's DDP never waits for gradients it will
    not get. D sees sample and generated images in one concatenated batch (one forward per step).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module | None,
        cfg: RestoreTrainConfig,
        feature_net: nn.Module | None = None,
    ):
        if cfg.adversarial != "none" and discriminator is None:
            raise ValueError(f"adversarial {cfg.adversarial!r} needs a discriminator")
        if cfg.perceptual > 0 and feature_net is None:
            raise ValueError("a perceptual weight needs a feature network")
        self.g, self.d, self.cfg = generator, discriminator, cfg
        self.feature_net = feature_net.eval().requires_grad_(False) if feature_net is not None else None
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr_d, betas=betas) if discriminator else None
        self.ema = EMA(generator, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.step = 0

    @property
    def adversarial_on(self) -> bool:
        return self.cfg.adversarial != "none" and self.cfg.k2 > 0 and self.step >= self.cfg.warmup_steps

    def train_step(self, degraded: Tensor, target: Tensor) -> dict[str, Tensor]:
        """One D and one G update on pairs ``(B, 3, H, W)`` in ``[0, 1]``; returns the losses (detached)."""
        self.g.train()
        fake = self.g(degraded)
        stats: dict[str, Tensor] = {}
        adversarial = self.adversarial_on
        if adversarial:
            stats |= self._d_step(target, fake.detach())
        stats |= self._g_step(target, fake, adversarial)
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.g)
        return stats

    def _d_step(self, target: Tensor, fake: Tensor) -> dict[str, Tensor]:
        self.d.train()
        unwrap(self.d).requires_grad_(True)
        logits = self.d(torch.cat([target, fake]))  # (2B, 1, h, w)
        real_logits, fake_logits = logits.chunk(2)
        loss = discriminator_loss(self.cfg.adversarial, real_logits, fake_logits)
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self._clip(self.d)
        self.opt_d.step()
        return {"loss_d": loss.detach(), "d_real": real_logits.detach().mean(), "d_fake": fake_logits.detach().mean()}

    def _g_step(self, target: Tensor, fake: Tensor, adversarial: bool) -> dict[str, Tensor]:
        l1 = F.l1_loss(fake, target)
        adv = perc = None
        if adversarial:
            d = unwrap(self.d).eval().requires_grad_(False)  # eval: spectral norm's power iteration holds still
            with torch.no_grad():
                real_logits = d(target)
            adv = generator_adversarial_loss(self.cfg.adversarial, real_logits, d(fake))
        if self.cfg.perceptual > 0:
            perc = perceptual_loss(self.feature_net, fake, target)
        loss = joint_loss(self.cfg, l1, adv, perc)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self._clip(self.g)
        self.opt_g.step()
        stats = {"loss_g": loss.detach(), "l1": l1.detach()}
        if adv is not None:
            stats["gan"] = adv.detach()
        if perc is not None:
            stats["perceptual"] = perc.detach()
        return stats

    def _clip(self, model: nn.Module) -> None:
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)

    def inference_generator(self) -> nn.Module:
        """The EMA generator if there is one, else the raw one (unwrapped)."""
        return self.ema.model if self.ema is not None else unwrap(self.g)

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d else None,
            "ema_updates": self.ema.updates if self.ema else 0,
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.opt_g.load_state_dict(state["opt_g"])
        if self.opt_d is not None and state.get("opt_d"):
            self.opt_d.load_state_dict(state["opt_d"])
        if self.ema is not None:
            self.ema.updates = int(state.get("ema_updates", 0))
