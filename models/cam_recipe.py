"""Training and evaluation recipe of the CAM localizer, separate from the network.

Training is plain image-level classification (cross-entropy on the image label): the patent gives no loss, optimizer
or schedule. We default to SGD with momentum, cosine decay after a short linear warm-up, random horizontal flips and
random resized crops. AdamW is available, but on a small synthetic task it reached full training accuracy with flat
CAMs (the box of the right class hit the object far less often than with SGD), so it is not the default.

Localization is evaluated with the protocol of Choe et al. (CVPR 2020): the CAM of the ground-truth class
("GT-known"), min-max normalized, upsampled to the image, boxes from its binarization swept over tau.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.adversarial import AdversarialConfig, AdversarialUpdate, build_type_head
from models.batches import BatchConfig
from models.cam import normalize_cam, upsample_cam
from models.wsol_metrics import max_box_acc, max_box_acc_v2, pxap


@dataclass
class CamTrainConfig:
    """Optimization and augmentation settings."""

    epochs: int = 10
    batch_size: int = 32
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.0
    hflip: bool = True
    crop_scale_min: float = 0.7  # random resized crop keeps at least this fraction of the side
    amp: bool = False  # bfloat16 autocast (GPU)
    # Fine-tuning a pretrained backbone. ``freeze``: feature layers (``stem``, ``stage1`` .. ``stage7``, ``head``,
    # ``conv1_1`` ...; ``features`` for all of them) that are not trained, their BatchNorm kept in eval mode.
    # ``backbone_lr_mult``: the learning rate of the other pretrained layers against that of the new ones (the
    # classifier and the inserted blocks).
    freeze: tuple[str, ...] = ()
    backbone_lr_mult: float = 1.0
    # Seed 002's augmentations, each applied per sample with its probability: Gaussian blur (sigma drawn from
    # ``blur_sigma``), rotation by 90, 180 or 270 degrees, and a resolution change (down to a side factor drawn
    # from ``[rescale_min, 1]`` and back up).
    blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 2.0)
    rotate90: float = 0.0
    rescale: float = 0.0
    rescale_min: float = 0.5
    # Seed 002's adversarial image-type head and type-stratified batches (see models/adversarial.py, batches.py).
    adversarial_type: AdversarialConfig = field(default_factory=AdversarialConfig)
    batches: BatchConfig = field(default_factory=BatchConfig)
    # Stop once the validation top-1 error (a fraction) is at or below this; ``epochs`` stays the cap.
    stop_val_error: float | None = None

    def __post_init__(self) -> None:
        for name in ("blur", "rotate90", "rescale"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"train.{name} is a probability in [0, 1], got {getattr(self, name)}")
        if self.stop_val_error is not None and not 0 <= self.stop_val_error <= 1:
            raise ValueError(f"train.stop_val_error is a fraction in [0, 1], got {self.stop_val_error}")


class CamRecipe:
    """Owns the optimizer and schedule; ``train_step`` does one update.

    Args:
        model: the network (possibly wrapped in DistributedDataParallel).
        cfg: optimization settings.
        steps_per_epoch: updates per epoch, for the schedule.
    """

    def __init__(self, model: nn.Module, cfg: CamTrainConfig, steps_per_epoch: int):
        self.model, self.cfg = model, cfg
        self.frozen = [m for name, m in model.named_modules() if _frozen(name, cfg.freeze)]
        for module in self.frozen:
            module.requires_grad_(False)
        self.optimizer = self._make_optimizer(_param_groups(model, cfg), cfg.lr)
        total = max(1, cfg.epochs * steps_per_epoch)
        warmup = int(cfg.warmup_epochs * steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: _lr_factor(s, warmup, total))
        self.adversarial = self._adversarial(total) if cfg.adversarial_type.enabled else None

    def _make_optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        """SGD with momentum or AdamW; parameter groups may carry their own learning rate and weight decay."""
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=self.cfg.momentum, weight_decay=self.cfg.weight_decay)
        if self.cfg.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=self.cfg.weight_decay)
        raise ValueError(f"unknown optimizer {self.cfg.optimizer!r}: use 'adamw' or 'sgd'")

    def _adversarial(self, total_steps: int) -> AdversarialUpdate:
        """D on the pooled features, with its own optimizer (constant learning rate); training only."""
        adv = self.cfg.adversarial_type
        net = getattr(self.model, "module", self.model)  # under DDP, the wrapped network
        head = build_type_head(net.num_features, adv).to(next(net.parameters()).device)
        per_update = self.cfg.batch_size if adv.update == "per_sample" else 1
        d_optimizer = self._make_optimizer(head.parameters(), self.cfg.lr * adv.d_lr_mult)
        return AdversarialUpdate(adv, head, self.optimizer, d_optimizer, total_steps * per_update)

    def augment(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Random resized crop (same output size) and horizontal flip, per sample."""
        b, _, h, w = x.shape
        out = torch.empty_like(x)
        for i in range(b):
            scale = self.cfg.crop_scale_min + (1 - self.cfg.crop_scale_min) * torch.rand(1, generator=generator).item()
            ch, cw = max(8, int(h * scale)), max(8, int(w * scale))
            top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
            crop = x[i : i + 1, :, top : top + ch, left : left + cw]
            crop = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
            if self.cfg.hflip and torch.rand(1, generator=generator).item() < 0.5:
                crop = crop.flip(-1)
            out[i] = self._type_augment(crop, generator)[0]
        return out

    def _type_augment(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Seed 002's blur, quarter-turn rotation and resolution change on one ``(1, 3, H, W)`` sample; no random
        draw at all when their probabilities are 0 (runs without them stay exactly as they were)."""
        cfg = self.cfg
        h, w = x.shape[-2:]
        if cfg.rotate90 and torch.rand(1, generator=generator).item() < cfg.rotate90:
            turns = int(torch.randint(1, 4, (1,), generator=generator)) if h == w else 2  # 90/270 need a square
            x = torch.rot90(x, turns, dims=(-2, -1))
        if cfg.rescale and torch.rand(1, generator=generator).item() < cfg.rescale:
            f = cfg.rescale_min + (1 - cfg.rescale_min) * torch.rand(1, generator=generator).item()
            small = F.interpolate(x, size=(max(8, int(h * f)), max(8, int(w * f))), mode="bilinear", antialias=True)
            x = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        if cfg.blur and torch.rand(1, generator=generator).item() < cfg.blur:
            lo, hi = cfg.blur_sigma
            x = gaussian_blur(x, lo + (hi - lo) * torch.rand(1, generator=generator).item())
        return x

    def train_step(self, images: Tensor, labels: Tensor, types: Tensor | None = None) -> dict[str, Tensor]:
        """One update (or one per sample, adversarially with ``update: per_sample``). ``types``: image-type
        indices into ``adversarial_type.image_types``, needed when the type head is enabled."""
        self.model.train()
        for module in self.frozen:
            module.eval()  # frozen BatchNorm keeps its running statistics
        if self.adversarial is not None:
            if types is None:
                raise ValueError("adversarial_type is enabled: train_step needs the image types of the batch")
            stats = self._adversarial_step(images, labels, types)
        else:
            with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.cfg.amp):
                logits = self.model(images)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.cfg.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            acc = (logits.argmax(1) == labels).float().mean()
            stats = {"loss": loss.detach(), "acc": acc.detach()}
        self.scheduler.step()
        return stats | {"lr": torch.tensor(self.scheduler.get_last_lr()[0])}

    def _adversarial_step(self, images: Tensor, labels: Tensor, types: Tensor) -> dict[str, Tensor]:
        correct = []

        def forward(idx: Tensor) -> tuple[Tensor, Tensor]:
            idx = idx.to(images.device)
            with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.cfg.amp):
                logits, feats = self.model(images[idx], with_features=True)
            y = labels[idx]
            correct.append((logits.argmax(1) == y).float().sum().detach())
            return F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.label_smoothing), feats.float()

        stats = self.adversarial.step(forward, types)
        acc = torch.stack(correct).sum() / len(labels)
        return {"loss": stats.pop("loss_content"), "acc": acc} | stats

    def state_dict(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        return state | ({"adversarial": self.adversarial.state_dict()} if self.adversarial else {})

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.adversarial is not None and "adversarial" in state:
            self.adversarial.load_state_dict(state["adversarial"])


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` (reflect padding, kernel radius ``3 sigma``). Written here
    because torch has no blur of its own and torchvision is not a dependency."""
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _feature_layer(name: str) -> str | None:
    """The top-level feature layer (``stage3_2``, ``conv1_1``, ...) a module or parameter name is inside."""
    parts = name.split(".")
    if "features" not in parts or parts.index("features") + 1 >= len(parts):
        return None
    return parts[parts.index("features") + 1]


def _frozen(name: str, freeze: tuple[str, ...]) -> bool:
    layer = _feature_layer(name)
    if layer is None or layer.startswith("sfs_") or not name.endswith(layer):
        return False  # only whole top-level layers are frozen; inserted blocks are always trained
    return any(p == "features" or layer == p or layer.startswith(p + "_") for p in freeze)


def _param_groups(model: nn.Module, cfg: CamTrainConfig) -> list[dict]:
    """Weight-decay and no-decay groups, each split into the pretrained backbone (at ``backbone_lr_mult`` times the
    learning rate) and the new layers; frozen parameters are left out."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = _feature_layer(name)
        backbone = layer is not None and not layer.startswith("sfs_")
        groups.setdefault((p.ndim <= 1 or name.endswith(".bias"), backbone), []).append(p)
    return [{"params": params, "weight_decay": 0.0 if no_decay else cfg.weight_decay,
             "lr": cfg.lr * (cfg.backbone_lr_mult if backbone else 1.0)}
            for (no_decay, backbone), params in sorted(groups.items())]  # fmt: skip


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def predict_cams(model: nn.Module, x: Tensor, class_idx: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Class probabilities ``(B, K)`` and CAMs in [0, 1] at the input size ``(B, H, W)``."""
    model.eval()
    logits, cams = model.cam(x, class_idx)
    cams = upsample_cam(normalize_cam(cams), tuple(x.shape[-2:]))
    return logits.softmax(1), cams


def evaluate_localization(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    boxes: list[list[tuple[int, int, int, int]]],
    masks: list[np.ndarray | None],
    batch_size: int = 64,
    cam_class: str = "gt",
    tau_step: float = 0.001,
) -> dict[str, float]:
    """Top-1, MaxBoxAcc at IoU 0.5 and 0.7 (and the tau that achieves them), MaxBoxAccV2, PxAP.

    ``images`` are normalized ``(N, 3, S, S)``; boxes and masks are at ``S x S``. ``cam_class``: "gt" (the
    protocol's GT-known CAM) or "pred" (the predicted class, as the patent's inference uses).
    """
    probs, cams = [], []
    for i in range(0, len(images), batch_size):
        x, y = images[i : i + batch_size], labels[i : i + batch_size]
        p, c = predict_cams(model, x, y if cam_class == "gt" else None)
        probs.append(p)
        cams.append(c)
    prob = torch.cat(probs)
    cam_list = [c.cpu().numpy() for c in torch.cat(cams)]
    acc = max_box_acc(cam_list, boxes, iou_thresholds=(0.5, 0.7), tau_step=tau_step)
    with_masks = [(c, m) for c, m in zip(cam_list, masks, strict=True) if m is not None and m.any()]
    return {
        "top1": float((prob.argmax(1).cpu() == labels.cpu()).float().mean() * 100),
        "maxboxacc_50": acc[0.5][0],
        "maxboxacc_70": acc[0.7][0],
        "tau_50": acc[0.5][1],
        "tau_70": acc[0.7][1],
        "maxboxacc_v2": max_box_acc_v2(cam_list, boxes, tau_step=tau_step),
        "pxap": pxap([c for c, _ in with_masks], [m for _, m in with_masks]) if with_masks else float("nan"),
        "n": len(cam_list),
    }
