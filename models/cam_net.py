"""CAM classification backbones (VGG16-style, a tiny CPU variant, and the ImageNet EfficientNet-Lite0) with
optional suppress-fuse-select blocks.

The network is a plain conv stack, global average pooling and one FC layer, so the class activation map of class
``c`` is ``sum_k W_fc[c, k] * A_k`` over the last feature map ``A``.

* ``"vgg16"``: the 13 VGG16 convolutions ``conv1_1 .. conv5_3`` (3x3), each followed by BatchNorm and ReLU
  (BatchNorm is our choice, for training from scratch), max-pooling after ``conv1_2``, ``conv2_2``, ``conv3_3``
  and ``conv4_3`` but not after ``conv5_3`` (usual WSOL practice, a 224 input gives 14x14), then ``conv6``
  (3x3, ``1024 * width_mult`` channels, BatchNorm and ReLU, replacing fc6-fc8), GAP and FC.
* ``"tiny"``: four stages of two 3x3 conv-BN-ReLU (``conv1_1 .. conv4_2``, widths 16, 32, 64, 128 times
  ``width_mult``), max-pooling after the first three stages (a 128 input gives 16x16), GAP and FC.
* ``"efficientnet_lite0"``: :mod:`models.efficientnet`'s Lite0 with the sixth stage at stride 1 (a 224 input
  gives 14x14, the usual WSOL resolution), its stem, seven stages ``stage1 .. stage7`` and 1x1 ``head`` (1280
  channels after ReLU6), GAP and FC. ``pretrained`` (default) starts from the ImageNet weights, the classifier
  new; ``width_mult`` must stay 1. Blocks go after a stage's last MBConv (a linear projection plus the skip: it
  may be negative, which branch 2 removes) or after ``head``. The ImageNet weights expect ``(x - 127) / 128``;
  the training job's ImageNet mean/std normalization gives the same classes (the cat of scikit-image at p 0.80
  against 0.79), so the CAM pipeline keeps one normalization for every arch.

A :class:`~models.sfs.SuppressFuseSelect` block goes after the ReLU of every conv layer named in
``insert_after``. The patent puts nothing after the block's 1x1 convolution, so by default (``block_act="none"``)
its output may be negative; with a block after the last conv layer (``conv6`` or ``conv4_2``) that is the map that
feeds GAP, FC and the CAM. ``block_act="relu"`` appends a ReLU to every block (an ablation option: it keeps the
next layer's input, and the CAM's feature map, non-negative as in the plain network).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from models.layers import ConvBNAct, config_from_dict
from models.sfs import SFSConfig, SuppressFuseSelect

# Per stage: (width, number of 3x3 convs). Max-pooling after every stage but the last.
_STAGES: dict[str, tuple[tuple[int, int], ...]] = {
    "vgg16": ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)),
    "tiny": ((16, 2), (32, 2), (64, 2), (128, 2)),
}
_EXTRA_CONV: dict[str, int] = {"vgg16": 1024}  # conv6 width, before width_mult
EFFICIENTNET = "efficientnet_lite0"
_EFFICIENTNET_LAYERS = [f"stage{s}" for s in range(1, 8)] + ["head"]


def _scaled(width: int, mult: float) -> int:
    return max(1, round(width * mult))


def conv_layer_names(arch: str) -> list[str]:
    """Every conv layer name of ``arch`` in order: the valid values of ``insert_after``."""
    if arch == EFFICIENTNET:
        return list(_EFFICIENTNET_LAYERS)
    if arch not in _STAGES:
        raise ValueError(f"unknown arch {arch!r}; valid: {sorted([*_STAGES, EFFICIENTNET])}")
    names = [f"conv{s}_{i}" for s, (_, n) in enumerate(_STAGES[arch], start=1) for i in range(1, n + 1)]
    return names + (["conv6"] if arch in _EXTRA_CONV else [])


@dataclass
class CamNetConfig:
    """Settings of a :class:`CamNet`.

    Attributes:
        arch: ``"vgg16"``, ``"tiny"`` or ``"efficientnet_lite0"``.
        num_classes: number of image classes.
        insert_after: conv layer names after whose ReLU a suppress-fuse-select block goes (0, 1 or more).
        sfs: settings shared by every inserted block.
        width_mult: scales every channel width.
        dropout: dropout probability before the FC layer.
        block_act: ``"none"`` (the patent) or ``"relu"`` after every inserted block.
        pretrained: ``efficientnet_lite0`` only: start from the ImageNet weights (loading a checkpoint replaces
            them anyway).
    """

    arch: str = "tiny"
    num_classes: int = 6
    insert_after: tuple[str, ...] = ()
    sfs: SFSConfig = field(default_factory=SFSConfig)
    width_mult: float = 1.0
    dropout: float = 0.0
    block_act: str = "none"
    pretrained: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.insert_after, str):
            self.insert_after = (self.insert_after,)
        self.insert_after = tuple(self.insert_after)
        valid = conv_layer_names(self.arch)
        for name in self.insert_after:
            if name not in valid:
                raise ValueError(f"unknown conv layer {name!r} in insert_after for arch {self.arch!r}; valid: {valid}")
        if len(set(self.insert_after)) != len(self.insert_after):
            raise ValueError(f"duplicate names in insert_after: {list(self.insert_after)}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.width_mult <= 0 or (self.arch == EFFICIENTNET and self.width_mult != 1.0):
            raise ValueError(f"width_mult must be > 0 (and 1 for {EFFICIENTNET}), got {self.width_mult}")
        if self.block_act not in ("none", "relu"):
            raise ValueError(f"block_act must be 'none' or 'relu', got {self.block_act!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def cam_net_config_from_dict(d: Mapping[str, Any]) -> CamNetConfig:
    """A :class:`CamNetConfig` from a plain dict (``sfs`` may be a nested dict; lists become tuples); an unknown key
    fails with its name."""
    return config_from_dict(CamNetConfig, d, "cam net")


def _efficientnet_features(cfg: CamNetConfig) -> tuple[nn.Sequential, int]:
    """Lite0's stem, MBConv blocks (``stageS_I``) and head in one sequence, blocks inserted after named layers."""
    from models.efficientnet import EfficientNet, EfficientNetConfig, load_lite0_imagenet

    net = EfficientNet(EfficientNetConfig(num_classes=cfg.num_classes, last_stride=1, dropout=0.0))
    if cfg.pretrained:
        load_lite0_imagenet(net, head=False)
    layers: OrderedDict[str, nn.Module] = OrderedDict(stem=net.stem)
    counts: dict[str, int] = {}
    for i, (block, stage) in enumerate(zip(net.blocks, net.stage_of, strict=True)):
        counts[stage] = counts.get(stage, 0) + 1
        layers[f"{stage}_{counts[stage]}"] = block
        if (i + 1 == len(net.blocks) or net.stage_of[i + 1] != stage) and stage in cfg.insert_after:
            _add_block(layers, stage, block.project.conv.conv.out_channels, cfg)
    layers["head"] = net.head
    if "head" in cfg.insert_after:
        _add_block(layers, "head", net.feature_channels, cfg)
    return nn.Sequential(layers), net.feature_channels


def _add_block(layers: OrderedDict[str, nn.Module], name: str, channels: int, cfg: CamNetConfig) -> None:
    layers[f"sfs_{name}"] = SuppressFuseSelect(channels, cfg.sfs)
    if cfg.block_act == "relu":
        layers[f"sfs_{name}_act"] = nn.ReLU()


def _build_features(cfg: CamNetConfig) -> tuple[nn.Sequential, int]:
    """The conv stack with blocks and pools, and its output channels."""
    if cfg.arch == EFFICIENTNET:
        return _efficientnet_features(cfg)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    in_ch = 3
    stages = _STAGES[cfg.arch]
    for s, (width, n) in enumerate(stages, start=1):
        for i in range(1, n + 1):
            in_ch = _add_conv(layers, f"conv{s}_{i}", in_ch, _scaled(width, cfg.width_mult), cfg)
        if s < len(stages):
            layers[f"pool{s}"] = nn.MaxPool2d(kernel_size=2, stride=2)
    if cfg.arch in _EXTRA_CONV:
        in_ch = _add_conv(layers, "conv6", in_ch, _scaled(_EXTRA_CONV[cfg.arch], cfg.width_mult), cfg)
    return nn.Sequential(layers), in_ch


def _add_conv(layers: OrderedDict[str, nn.Module], name: str, in_ch: int, out_ch: int, cfg: CamNetConfig) -> int:
    layers[name] = ConvBNAct(in_ch, out_ch, kernel=3)
    if name in cfg.insert_after:
        _add_block(layers, name, out_ch, cfg)
    return out_ch


class CamNet(nn.Module):
    """Conv stack, global average pooling and one FC layer; ``cam`` gives class activation maps.

    Args:
        cfg: network settings.
    """

    def __init__(self, cfg: CamNetConfig):
        super().__init__()
        self.cfg = cfg
        self.conv_names: list[str] = conv_layer_names(cfg.arch)
        self.features, self.num_features = _build_features(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(self.num_features, cfg.num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    @property
    def sfs_blocks(self) -> dict[str, SuppressFuseSelect]:
        """The inserted blocks by the conv layer they follow."""
        children = self.features.named_children()
        return {n.removeprefix("sfs_"): m for n, m in children if isinstance(m, SuppressFuseSelect)}

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> last feature map ``A`` ``(B, K, h, w)``."""
        return self.features(x)

    def forward_head(self, feats: Tensor, pre_logits: bool = False) -> Tensor:
        """GAP, dropout and FC: logits ``(B, num_classes)``, or the pooled ``(B, K)`` if ``pre_logits``."""
        pooled = self.drop(feats.mean(dim=(2, 3)))  # (B, K)
        return pooled if pre_logits else self.fc(pooled)

    def forward(self, x: Tensor, with_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Logits; with ``with_features`` also the pooled features ``(B, K)`` before dropout (what an image-type
        head reads while training; through the DDP wrapper, so gradients still synchronize)."""
        pooled = self.forward_features(x).mean(dim=(2, 3))
        logits = self.fc(self.drop(pooled))
        return (logits, pooled) if with_features else logits

    def cam(self, x: Tensor, class_idx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Logits ``(B, num_classes)`` and the raw CAM ``(B, h, w)`` of ``class_idx`` (default: the argmax).

        The CAM is ``sum_k W_fc[c, k] * A_k`` without the FC bias, neither normalized nor upsampled.
        """
        feats = self.forward_features(x)  # (B, K, h, w)
        logits = self.forward_head(feats)
        idx = logits.argmax(dim=1) if class_idx is None else class_idx.to(device=x.device, dtype=torch.long)
        return logits, self.cam_from_features(feats, idx)

    def weighted_features(self, feats: Tensor, class_idx: Tensor) -> Tensor:
        """Each channel of ``feats`` ``(B, K, h, w)`` times its FC weight for ``class_idx`` ``(B,)``."""
        weights = self.fc.weight[class_idx.to(device=feats.device, dtype=torch.long)]  # (B, K)
        return weights[:, :, None, None] * feats

    def cam_from_features(self, feats: Tensor, class_idx: Tensor, fusion: str = "sum") -> Tensor:
        """The CAM ``(B, h, w)`` of ``class_idx`` from a feature map ``(B, K, h, w)``: the class-weighted channels
        fused per position by ``"sum"`` (the classic CAM), ``"mean"`` (the same map divided by K) or ``"max"``."""
        weighted = self.weighted_features(feats, class_idx)
        if fusion == "sum":
            return weighted.sum(dim=1)
        if fusion == "mean":
            return weighted.mean(dim=1)
        if fusion == "max":
            return weighted.amax(dim=1)
        raise ValueError(f"unknown channel fusion {fusion!r}; valid: sum, mean, max")


def build_cam_net(cfg: CamNetConfig) -> CamNet:
    """Build a :class:`CamNet`."""
    return CamNet(cfg)
