"""Checkpoints that describe themselves: weights plus builder name, model config, progress, metrics and data.

Bytes in, bytes out: reading and writing storage is the caller's job. Loading uses ``torch.load(weights_only=True)``,
so a checkpoint holds only tensors and plain Python values. ``config``, ``metrics`` and ``data`` are stored as
JSON-able values (NumPy scalars and arrays become Python numbers and lists, tuples become lists).
"""

from __future__ import annotations

import dataclasses
import io
import json
import platform
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from torch import nn

from models.cam_net import build_cam_net, cam_net_config_from_dict

FORMAT = "mediascore-checkpoint/1"


def _build_cam_net_from_dict(config: Mapping[str, Any]) -> nn.Module:
    return build_cam_net(cam_net_config_from_dict(config))


def _build_fusion_from_dict(config: Mapping[str, Any]) -> nn.Module:
    from models.fusion import build_fusion, fusion_config_from_dict

    return build_fusion(fusion_config_from_dict(config))


def _build_generator_from_dict(config: Mapping[str, Any]) -> nn.Module:
    from models.restore_net import build_generator, generator_config_from_dict

    return build_generator(generator_config_from_dict(config))


def _build_quality_net_from_dict(config: Mapping[str, Any]) -> nn.Module:
    from models.quality_net import build_quality_net, quality_net_config_from_dict

    return build_quality_net(quality_net_config_from_dict(config))


def _build_scorefusion_from_dict(config: Mapping[str, Any]) -> nn.Module:
    from models.scorefusion import build_scorefusion

    return build_scorefusion(dict(config))


BUILDERS: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {
    "cam_net": _build_cam_net_from_dict,
    "fusion": _build_fusion_from_dict,
    "restore_generator": _build_generator_from_dict,
    "quality_net": _build_quality_net_from_dict,
    "scorefusion": _build_scorefusion_from_dict,
}
"""Builder name -> function from the stored config dict to a fresh model."""


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    raise TypeError(f"not JSON-able: {type(obj).__name__}")


def _plain(obj: Any, what: str) -> Any:
    """A JSON round trip of ``obj`` (dataclasses become dicts)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    try:
        return json.loads(json.dumps(obj, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint {what} must be JSON-able: {exc}") from None


def checkpoint_bytes(
    model: nn.Module,
    builder: str,
    config: Mapping[str, Any],
    step: int,
    epoch: int,
    metrics: Mapping[str, Any],
    data: Mapping[str, Any],
    optimizer_state: dict | None = None,
    extra: dict | None = None,
) -> bytes:
    """Serialize a model and what it takes to rebuild and trust it.

    Args:
        model: the network (its ``state_dict`` is saved on CPU).
        builder: a key of :data:`BUILDERS` that rebuilds the model from ``config``.
        config: the model config as a plain dict (e.g. ``dataclasses.asdict(CamNetConfig)``; a dataclass works too).
        step: optimizer steps done.
        epoch: epochs done (the caller's convention).
        metrics: evaluation results.
        data: what the model was trained on (e.g. manifest uri and hash).
        optimizer_state: optimizer / scheduler state to resume from.
        extra: anything else made of tensors and plain values.

    Raises:
        ValueError: unknown builder, or ``config``, ``metrics`` or ``data`` not JSON-able.
    """
    if builder not in BUILDERS:
        raise ValueError(f"unknown builder {builder!r}; registered: {sorted(BUILDERS)}")
    payload = {
        "format": FORMAT,
        "builder": builder,
        "config": _plain(config, "config"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": int(step),
        "epoch": int(epoch),
        "metrics": _plain(metrics, "metrics"),
        "data": _plain(data, "data"),
        "optimizer": optimizer_state,
        "extra": extra,
        "versions": {"torch": str(torch.__version__), "python": platform.python_version()},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def load_checkpoint(data: bytes, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint dict written by :func:`checkpoint_bytes`.

    Raises:
        ValueError: bytes that are not a checkpoint of this format.
    """
    try:
        ckpt = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or corrupt bytes
        raise ValueError(f"not a readable checkpoint: {type(exc).__name__}: {exc}") from None
    _check_format(ckpt)
    return ckpt


def release_bytes(data: bytes, dtype: torch.dtype | None = torch.float16) -> bytes:
    """A checkpoint to ship: the same file without its optimizer state, floating weights stored as ``dtype``.

    What a served or committed model needs is its weights, config, metrics and data; the optimizer state (as large
    as the weights again, for SGD with momentum) only resumes training. ``float16`` halves the rest: loading copies
    the weights into the float32 parameters the builder makes, and the 11 significant bits of float16 move a
    network's outputs far less than its training noise does (tested on the CAM localizer). ``None`` keeps float32.
    """
    ckpt = load_checkpoint(data)
    if dtype is not None:
        ckpt["state_dict"] = {k: v.to(dtype) if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    ckpt["optimizer"] = None
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return buffer.getvalue()


def _check_format(ckpt: Any) -> None:
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"unexpected checkpoint format {found!r}; expected {FORMAT!r}")


def describe(ckpt: dict, uri: str) -> dict:
    """What a loaded checkpoint says about itself, for ``/v1/models`` and reports: where it came from, its epoch,
    step, creation time and metrics; ``version`` is the ``<uri>#epoch=<n>`` string the output columns carry."""
    return {
        "uri": uri,
        "version": f"{uri}#epoch={ckpt['epoch']}",
        "builder": ckpt["builder"],
        "epoch": ckpt["epoch"],
        "step": ckpt["step"],
        "created": ckpt.get("created"),
        "metrics": ckpt.get("metrics") or {},
    }


def build_from_checkpoint(data: bytes | dict, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model with its registered builder, load the weights (strict) and switch to eval mode.

    Returns:
        The model on ``map_location`` and the checkpoint dict.
    """
    ckpt = load_checkpoint(bytes(data), map_location) if isinstance(data, bytes | bytearray) else data
    _check_format(ckpt)
    if ckpt.get("builder") not in BUILDERS:
        raise ValueError(f"unknown builder {ckpt.get('builder')!r}; registered: {sorted(BUILDERS)}")
    model = BUILDERS[ckpt["builder"]](ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(map_location).eval(), ckpt
