"""The restoration GAN's networks: a same-size generator with skip connections and a patch discriminator.

The method fixes only that the generator maps a 3-channel image to a restored image of the same size and "can be a
network with skip connections"; the discriminator is described by what it does. Our choices, all in the configs:

* Generator: a small U-shaped network. The input is first folded by pixel-unshuffle (``unshuffle`` x ``unshuffle``
  pixels -> channels), so the full-resolution work is one convolution at each end: a 1280x720 frame restores in
  seconds on one CPU core. Each level has residual blocks; the decoder adds the encoder's map of the same level
  (additive skips), and the output is the input plus a predicted correction (a global skip), so an untrained
  network starts near the identity. No normalization layers: statistics of small training crops would not match
  whole frames at inference. Any input size works: it is reflect-padded to a multiple of
  ``unshuffle * 2**levels`` and cropped back.
* Discriminator: a patch discriminator (strided 4x4 convolutions, LeakyReLU) that returns a map of real/fake logits,
  one per receptive field, with optional spectral norm.

Pixels are RGB in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from models.layers import config_from_dict


@dataclass
class GeneratorConfig:
    """Generator shape.

    Attributes:
        width: channels at the first level; each level down doubles them.
        levels: downsamplings inside the U.
        blocks: residual blocks per level, in the encoder and again in the decoder.
        middle_blocks: residual blocks at the lowest resolution.
        unshuffle: pixel-unshuffle factor at the input (1: the U starts at full resolution).
        residual: add the input to the output (global skip).
    """

    width: int = 32
    levels: int = 2
    blocks: int = 1
    middle_blocks: int = 2
    unshuffle: int = 2
    residual: bool = True


@dataclass
class DiscriminatorConfig:
    """Patch discriminator shape.

    Attributes:
        width: channels of the first convolution; doubled at each strided layer (capped at 8x).
        layers: strided 4x4 convolutions; the receptive field grows with them.
        spectral_norm: spectral normalization on every convolution.
    """

    width: int = 32
    layers: int = 3
    spectral_norm: bool = True


class ResBlock(nn.Module):
    """``x + conv(act(conv(x)))``, 3x3 convolutions."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class Generator(nn.Module):
    """Degraded image ``(B, 3, H, W)`` -> restored image of the same shape (not clamped; clamp for display)."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        u, w = cfg.unshuffle, cfg.width
        self.head = nn.Conv2d(3 * u * u, w, 3, padding=1)
        self.encoders, self.downs, self.ups, self.decoders = (nn.ModuleList() for _ in range(4))
        for level in range(cfg.levels):
            ch = w * 2**level
            self.encoders.append(nn.Sequential(*(ResBlock(ch) for _ in range(cfg.blocks))))
            self.downs.append(nn.Conv2d(ch, 2 * ch, 4, stride=2, padding=1))
            self.ups.append(nn.Sequential(nn.Conv2d(2 * ch, 4 * ch, 1), nn.PixelShuffle(2)))
            self.decoders.append(nn.Sequential(*(ResBlock(ch) for _ in range(cfg.blocks))))
        self.middle = nn.Sequential(*(ResBlock(w * 2**cfg.levels) for _ in range(cfg.middle_blocks)))
        self.tail = nn.Conv2d(w, 3 * u * u, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # start as the identity (with the global skip)
        nn.init.zeros_(self.tail.bias)

    @property
    def multiple(self) -> int:
        """Input sides are padded to a multiple of this."""
        return self.cfg.unshuffle * 2**self.cfg.levels

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        pad_h, pad_w = -h % m, -w % m
        # reflect needs a side longer than its pad; a tiny side (a 1-pixel strip) repeats its edge instead
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode=mode) if pad_h or pad_w else x
        y = self.head(F.pixel_unshuffle(padded, self.cfg.unshuffle))  # (B, w, H/u, W/u)
        skips = []
        for encode, down in zip(self.encoders, self.downs, strict=True):
            y = encode(y)
            skips.append(y)
            y = down(y)
        y = self.middle(y)
        for level in reversed(range(self.cfg.levels)):
            y = self.decoders[level](self.ups[level](y) + skips[level])
        out = F.pixel_shuffle(self.tail(y), self.cfg.unshuffle)  # (B, 3, H', W')
        if self.cfg.residual:
            out = out + padded
        return out[..., :h, :w]


class PatchDiscriminator(nn.Module):
    """Image ``(B, 3, H, W)`` -> real/fake logits ``(B, 1, h, w)``, one per patch."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        norm = spectral_norm if cfg.spectral_norm else (lambda m: m)
        layers: list[nn.Module] = []
        ch_in = 3
        for i in range(cfg.layers):
            ch = cfg.width * min(2**i, 8)
            layers += [norm(nn.Conv2d(ch_in, ch, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            ch_in = ch
        layers += [norm(nn.Conv2d(ch_in, ch_in, 3, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(norm(nn.Conv2d(ch_in, 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x * 2 - 1)


def build_generator(cfg: GeneratorConfig) -> Generator:
    return Generator(cfg)


def build_discriminator(cfg: DiscriminatorConfig) -> PatchDiscriminator:
    return PatchDiscriminator(cfg)


def generator_config_from_dict(d: Mapping[str, Any]) -> GeneratorConfig:
    return config_from_dict(GeneratorConfig, d, "generator")


def discriminator_config_from_dict(d: Mapping[str, Any]) -> DiscriminatorConfig:
    return config_from_dict(DiscriminatorConfig, d, "discriminator")
