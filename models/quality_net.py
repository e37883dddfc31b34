"""The image quality classifier: a CNN feature extractor, a fully connected head, softmax over poor / medium / good.

The method (claims 8-11): feature-extraction layers give a target feature vector, a fully connected layer connects
"the target feature vectors output by each feature-extraction layer" and a normalization gives one probability per
quality class; the class of highest probability wins. We read the connection literally: each stage's map is
globally average-pooled and the pooled vectors of all stages are concatenated before the head, so the head sees
fine (noise, JPEG blocks) and coarse (blur) evidence alike.

The same network's stage maps serve as the feature space of the optional perceptual loss of the restoration
recipe: no pretrained VGG can be fetched here, and a network trained to tell degradations apart is sensitive to
exactly what the generator must remove. Pixels are RGB in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models.layers import ConvBNAct, config_from_dict

CLASSES: tuple[str, ...] = ("poor", "medium", "good")
"""Quality classes, worst first (the method's 0-30, 30-60, 60-100)."""

CLASS_RANGES: tuple[tuple[float, float], ...] = ((0.0, 30.0), (30.0, 60.0), (60.0, 100.0))


@dataclass
class QualityNetConfig:
    """Classifier shape.

    Attributes:
        widths: channels of each stage; every stage after the first halves the resolution first.
        hidden: width of the hidden fully connected layer (0: a single linear layer).
        dropout: before the last layer.
    """

    widths: tuple[int, ...] = (16, 32, 64, 96)
    hidden: int = 64
    dropout: float = 0.1


class QualityNet(nn.Module):
    """``(B, 3, H, W)`` in ``[0, 1]`` -> logits ``(B, 3)`` over :data:`CLASSES`."""

    def __init__(self, cfg: QualityNetConfig):
        super().__init__()
        self.cfg = cfg
        stages, ch = [], 3
        for i, width in enumerate(cfg.widths):
            pool = [nn.MaxPool2d(2)] if i else []
            stages.append(nn.Sequential(*pool, ConvBNAct(ch, width), ConvBNAct(width, width)))
            ch = width
        self.stages = nn.ModuleList(stages)
        total = sum(cfg.widths)
        head: list[nn.Module] = [nn.Linear(total, cfg.hidden), nn.ReLU(inplace=True)] if cfg.hidden else []
        head += [nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden or total, len(CLASSES))]
        self.head = nn.Sequential(*head)

    def features(self, x: Tensor) -> list[Tensor]:
        """The map of every stage, finest first."""
        maps, y = [], (x - 0.5) / 0.25
        for stage in self.stages:
            y = stage(y)
            maps.append(y)
        return maps

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([m.mean(dim=(2, 3)) for m in self.features(x)], dim=1)  # (B, sum(widths))
        return self.head(pooled)


def quality_number(probs: Tensor) -> Tensor:
    """Expected quality on the method's 0-100 scale: class probabilities ``(..., 3)`` times the class midpoints."""
    mids = torch.tensor([(lo + hi) / 2 for lo, hi in CLASS_RANGES], dtype=probs.dtype, device=probs.device)
    return probs @ mids


def build_quality_net(cfg: QualityNetConfig) -> QualityNet:
    return QualityNet(cfg)


def quality_net_config_from_dict(d: Mapping[str, Any]) -> QualityNetConfig:
    return config_from_dict(QualityNetConfig, d, "quality net")
