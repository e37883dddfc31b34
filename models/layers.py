"""Small layers shared by the model families."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar, get_type_hints

from torch import Tensor, nn

T = TypeVar("T")


class ConvBNAct(nn.Sequential):
    """Convolution, optional BatchNorm, optional ReLU; 'same' padding for odd kernels.

    The convolution has a bias only when there is no BatchNorm after it. Weights use Kaiming-normal (fan-out,
    ReLU) initialization, the usual choice for training from scratch.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        kernel: square kernel size.
        stride: convolution stride.
        act: append a ReLU.
        bn: append a BatchNorm2d.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, act: bool = True, bn: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=not bn)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        if bn:
            self.bn = nn.BatchNorm2d(out_ch)
        if act:
            self.act = nn.ReLU(inplace=True)

    @property
    def out_channels(self) -> int:
        """Channels of the output map."""
        return self.conv.out_channels


def global_max_pool(x: Tensor) -> Tensor:
    """Spatial maximum per channel: ``(B, C, H, W) -> (B, C)``."""
    return x.amax(dim=(2, 3))


def config_from_dict(cls: type[T], d: Mapping[str, Any] | T, what: str) -> T:
    """A dataclass ``cls`` from a plain dict (YAML, or a checkpoint's stored config); unknown keys fail.

    The one way every model config is read back: nested dataclass fields are read the same way (their errors name
    the path, e.g. ``cam net.sfs``), and lists become tuples where the field's default is a tuple, so a YAML round
    trip compares equal. An instance of ``cls`` comes back as it is.
    """
    if isinstance(d, cls):
        return d
    valid = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(valid)
    if unknown:
        raise ValueError(f"unknown {what} keys {sorted(unknown)}; valid: {sorted(valid)}")
    hints = get_type_hints(cls)
    kwargs = {}
    for key, value in d.items():
        if is_dataclass(hints[key]) and isinstance(value, Mapping):
            value = config_from_dict(hints[key], value, f"{what}.{key}")
        elif isinstance(value, list) and isinstance(valid[key].default, tuple):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
