"""Checkpoints from object storage: one way to read them and one way to rebuild their model. Ray-free."""

from __future__ import annotations

from jobs.common import storage


def device_for(device: str | None = None):
    """``device`` as a torch device; unset: CUDA when there is one, else the CPU."""
    import torch

    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def read_checkpoint(uri: str) -> dict:
    """The checkpoint dict at ``uri`` (on the CPU), checked to be of mediascore's format."""
    from models.checkpoint import load_checkpoint

    return load_checkpoint(storage.read_bytes(uri))


def load_model(uri: str, device: str | None = None):
    """Rebuild the model at ``uri`` in eval mode on ``device`` (see :func:`device_for`).

    Returns:
        ``(model, checkpoint, info)``: the network, the checkpoint dict and what it says about itself
        (:func:`models.checkpoint.describe`: uri, version, epoch, metrics).
    """
    from models.checkpoint import build_from_checkpoint, describe

    model, ckpt = build_from_checkpoint(read_checkpoint(uri), device_for(device))
    return model, ckpt, describe(ckpt, uri)
