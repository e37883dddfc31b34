"""Scoring multi-modal samples with a ``mediascore train scorefusion`` checkpoint. Ray-free: the eval, the
``score --samples`` job and the ``/v1/scorefusion`` route share it.

A sample is ``{modality: (bytes, name)}``. Each present modality is decoded as in training
(:mod:`jobs.media.modalities`, the checkpoint's size, depth and removal) and scored by its network; the fused
score uses the checkpoint's weights and mode. A modality that is missing or unreadable is handled by ``missing``:

* ``renormalise`` (default): fuse the modalities that are there, their weights divided by their sum (``literal``
  mode divides by the number present); ``sf_missing`` names what was left out;
* ``drop``: the sample gets no score, and its error says which modality was missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from jobs.media.checkpoints import device_for, load_model
from jobs.media.decode import DecodeError, describe
from jobs.media.modalities import load_modality

Missing = Literal["renormalise", "drop"]


@dataclass
class SampleScore:
    """What one sample gets: ``sf_class`` (the positive label or ``not_<positive>``), ``sf_score`` (fused),
    ``sf_scores`` (per modality; absent ones left out), ``sf_weights`` (the weights used), ``sf_missing``."""

    sf_class: str | None
    sf_score: float | None
    sf_scores: dict[str, float]
    sf_weights: dict[str, float]
    sf_missing: list[str]
    error: str | None = None


class ScoreFusionScorer:
    """A loaded checkpoint and the way its inputs are prepared."""

    def __init__(self, checkpoint: str, device: str | None = None, missing: Missing = "renormalise"):
        if missing not in ("renormalise", "drop"):
            raise ValueError(f"missing must be renormalise or drop, got {missing!r}")
        self.device = device_for(device)
        self.model, ckpt, self.info = load_model(checkpoint, device)
        self.data, self.missing = ckpt["data"], missing
        self.names = self.model.names
        self.specs = {s.name: s for s in self.model.cfg.modalities}
        self.weights = self.model.weights.cpu().numpy().astype(float)
        self.version = self.info["version"]

    def prepare(self, name: str, data: bytes, file_name: str) -> np.ndarray:
        spec = self.specs[name]
        removal = (self.data.get("removal") or {}).get(name, "none")
        return load_modality(data, file_name, spec.dims, spec.in_channels, self.data["image_size"],
                             self.data.get("depth", 8), removal)  # fmt: skip

    def modality_scores(self, name: str, inputs: list[np.ndarray]) -> np.ndarray:
        import torch

        net = self.model.nets[name]
        with torch.no_grad():
            x = torch.from_numpy(np.stack(inputs)).to(self.device)
            return torch.sigmoid(net(x).squeeze(-1)).cpu().numpy().astype(float)

    def fuse(self, scores: dict[str, float], missing: list[str]) -> SampleScore:
        """The fused score and class of one sample's per-modality scores (see the module docstring)."""
        from models.scorefusion import decision_threshold

        present = [n for n in self.names if n in scores]
        if not present or (missing and self.missing == "drop"):
            reason = f"modality_missing: {', '.join(missing) or 'all'} (missing: {self.missing})"
            return SampleScore(None, None, scores, {}, missing, reason)
        w = np.array([self.weights[self.names.index(n)] for n in present])
        w = w / w.sum()
        fused = float(np.dot(w, [scores[n] for n in present]))
        mode = self.model.cfg.mode
        if mode == "literal":
            fused /= len(present)
        positive = self.data.get("positive", "positive")
        threshold = decision_threshold(self.model.cfg.threshold, len(present), mode)
        label = positive if fused >= threshold else f"not_{positive}"
        weights = {n: float(v) for n, v in zip(present, w, strict=True)}
        return SampleScore(label, fused, scores, weights, missing)

    def score_samples(self, samples: list[dict[str, tuple[bytes, str]]]) -> list[SampleScore]:
        """Score a batch of samples (each ``{modality: (bytes, file name)}``), one network call per modality."""
        scores: list[dict[str, float]] = [{} for _ in samples]
        missing: list[list[str]] = [[] for _ in samples]
        for name in self.names:
            inputs, rows = [], []
            for i, sample in enumerate(samples):
                if name not in sample:
                    missing[i].append(name)
                    continue
                try:
                    inputs.append(self.prepare(name, *sample[name]))
                    rows.append(i)
                except DecodeError as exc:
                    missing[i].append(f"{name} ({describe(exc)})")
            if inputs:
                for i, s in zip(rows, self.modality_scores(name, inputs), strict=True):
                    scores[i][name] = float(s)
        return [self.fuse(s, m) for s, m in zip(scores, missing, strict=True)]
