"""Training recipe of the fusion scorer: the three losses, the optimizer, one update per ``train_step``.

``L = l1 * L1 + l2 * L2 + l3 * L3``:

* L1, the modality-weight loss: each present modality's weight against its weight label. ``weight_labels:
  image`` is the method's simple case: every modality's weight label is the image label (1 for
  ``positive_class``, else 0). ``weight_labels: modality`` is its general case, "modalities related to the label
  get 1": for a positive row whose batch names the modality that holds its cause (``weight_group``, an index into
  ``models.fusion.WEIGHT_GROUPS``), only that modality's tokens get 1 (a row without one falls back to the image
  label). BCE on the weight logits (the notes' reconstruction) or MSE on the weights.
* L2, the task loss: cross-entropy of the decoder's logits.
* L3, the auxiliary loss: cross-entropy of the key module's auxiliary head (only with the key modality).

The method gives no loss weights, optimizer or schedule: AdamW with a constant learning rate after a short warm-up,
only over parameters that require gradients (the frozen upstream CNN is left out).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.fusion import TOKEN_MODALITY, WEIGHT_GROUPS


@dataclass
class FusionTrainConfig:
    """Optimization settings.

    Attributes:
        epochs: passes over the training split.
        batch_size: samples per update (per worker).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up of the learning rate.
        l1: weight of the modality-weight loss.
        l2: weight of the task loss.
        l3: weight of the auxiliary loss.
        weight_loss: ``bce`` or ``mse``.
        weight_labels: ``image`` (every modality gets the image label) or ``modality`` (only the cause's).
        patience: early stopping after this many epochs without a lower validation loss (0: never).
        grad_clip: clip the gradient norm (0: no clipping).
        target_precision: the decision threshold stored with each checkpoint is the lowest validation score at
            which precision reaches this (``None``, or when no score reaches it: the threshold of the best F1).
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    l1: float = 0.5
    l2: float = 1.0
    l3: float = 0.5
    weight_loss: str = "bce"
    weight_labels: str = "image"
    patience: int = 6
    grad_clip: float = 5.0
    target_precision: float | None = 0.9

    def __post_init__(self) -> None:
        if self.weight_loss not in ("bce", "mse"):
            raise ValueError(f"weight_loss must be 'bce' or 'mse', got {self.weight_loss!r}")
        if self.weight_labels not in ("image", "modality"):
            raise ValueError(f"weight_labels must be 'image' or 'modality', got {self.weight_labels!r}")
        if self.target_precision is not None and not 0 < self.target_precision <= 1:
            raise ValueError(f"target_precision must be in (0, 1], got {self.target_precision}")


def weight_targets(out: Mapping[str, Tensor], label: Tensor, positive_class: int, group: Tensor | None) -> Tensor:
    """Weight labels ``(B, M)``: the image label, or with ``group`` ``(B,)`` (a modality code per row, -1 for
    none) 1 only on the tokens of that modality for positive rows."""
    positive = (label == positive_class)[:, None].expand_as(out["mask"])  # (B, M)
    if group is None:
        return positive.float()
    codes = torch.tensor([WEIGHT_GROUPS.index(m) for m in TOKEN_MODALITY], device=label.device)
    token_group = codes[out["kinds"]]  # (B, M)
    known = (group >= 0)[:, None]
    return (positive & (~known | (token_group == group[:, None]))).float()


def fusion_losses(
    out: Mapping[str, Tensor],
    label: Tensor,
    cfg: FusionTrainConfig,
    positive_class: int = 1,
    weight_group: Tensor | None = None,
) -> dict[str, Tensor]:
    """The three loss terms and their weighted total for model outputs ``out`` and labels ``(B,)``; ``weight_group``
    is used with ``weight_labels: modality``."""
    zero = out["logits"].sum() * 0.0
    mask = out["mask"]  # (B, M)
    group = weight_group if cfg.weight_labels == "modality" else None
    target = weight_targets(out, label, positive_class, group)  # (B, M): weight labels
    if mask.any():
        if cfg.weight_loss == "bce":
            l1 = F.binary_cross_entropy_with_logits(out["weight_logits"][mask], target[mask])
        else:
            l1 = F.mse_loss(out["weights"][mask], target[mask])
    else:
        l1 = zero
    l2 = F.cross_entropy(out["logits"], label)
    l3 = F.cross_entropy(out["aux_logits"], label) if "aux_logits" in out else zero
    total = cfg.l1 * l1 + cfg.l2 * l2 + cfg.l3 * l3
    return {"loss": total, "l1": l1, "l2": l2, "l3": l3}


class FusionRecipe:
    """Owns the optimizer; ``train_step`` does one update, ``eval_step`` scores a batch without one.

    Args:
        model: a :class:`~models.fusion.FusionScorer` (possibly wrapped in DistributedDataParallel).
        cfg: optimization settings.
        positive_class: the class whose probability is the score and whose label makes weight labels 1.
    """

    def __init__(self, model: nn.Module, cfg: FusionTrainConfig, positive_class: int = 1):
        self.model, self.cfg, self.positive_class = model, cfg, positive_class
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        warm = max(1, cfg.warmup_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warm))

    def train_step(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        self.model.train()
        out = self.model(batch)
        losses = fusion_losses(out, batch["label"].long(), self.cfg, self.positive_class, batch.get("weight_group"))
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        acc = (out["logits"].argmax(dim=1) == batch["label"]).float().mean()
        return {k: v.detach() for k, v in losses.items()} | {"acc": acc}

    @torch.no_grad()
    def eval_step(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Losses, the positive-class probability ``(B,)`` and the weights ``(B, M)`` of one batch."""
        self.model.eval()
        out = self.model(batch)
        losses = fusion_losses(out, batch["label"].long(), self.cfg, self.positive_class, batch.get("weight_group"))
        prob = out["logits"].softmax(dim=1)[:, self.positive_class]
        return losses | {"prob": prob, "weights": out["weights"], "mask": out["mask"], "kinds": out["kinds"]}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
