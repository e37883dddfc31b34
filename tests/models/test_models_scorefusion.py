"""Seed 003's fused score, its weight grid and claim 7's loop, and the per-modality networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from models.scorefusion import (
    ModalitySpec,
    ScoreFusionConfig,
    ScoreFusionNet,
    decision_threshold,
    fit_weights_grid,
    fit_weights_loss,
    fused_score,
    weight_grid,
    weight_parts,
)


def test_the_fused_score_by_hand_in_both_modes():
    scores = np.array([[0.9, 0.3, 0.6], [0.2, 0.8, 0.5]])
    weights = np.array([0.5, 0.2, 0.3])
    average = fused_score(scores, weights, "average")
    assert average == pytest.approx([0.45 + 0.06 + 0.18, 0.10 + 0.16 + 0.15])
    assert fused_score(scores, weights, "literal") == pytest.approx(average / 3)
    assert (
        decision_threshold(0.5, 3, "literal") == pytest.approx(0.5 / 3) and decision_threshold(0.5, 3, "average") == 0.5
    )


def test_the_grid_has_exactly_36_triples_in_tenths_each_summing_to_one():
    parts = weight_parts(3, 0.1)
    assert parts.shape == (36, 3) and len({tuple(row) for row in parts}) == 36
    assert (parts.sum(1) == 10).all() and parts.min() == 1 and parts.max() == 8
    grid = weight_grid(3, 0.1)
    assert grid == pytest.approx(parts / 10) and grid.sum(1) == pytest.approx(np.ones(36))
    assert weight_grid(2, 0.1).shape == (9, 2)
    with pytest.raises(ValueError, match="divide 1"):
        weight_grid(3, 0.3)


def test_the_grid_finds_the_modality_that_carries_the_label():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.stack([rng.random(200), np.clip(labels * 0.6 + rng.random(200) * 0.5, 0, 1), rng.random(200)], 1)
    weights, auc = fit_weights_grid(scores, labels, roc_auc_score)
    assert weights.argmax() == 1 and weights[1] == pytest.approx(0.8)
    assert auc >= roc_auc_score(labels, scores.mean(1))


@pytest.mark.parametrize("mode", ["average", "literal"])
def test_claim_7_stops_at_the_loss_threshold_or_at_max_iters(mode):
    labels = np.array([0, 1, 0, 1, 0, 1])
    scores = np.stack([np.where(labels, 0.95, 0.05), np.full(6, 0.5)], 1)
    reached = fit_weights_loss(scores, labels, mode, loss_threshold=0.3, max_iters=1000, lr=0.1)
    assert reached.converged and reached.loss <= 0.3 and 0 < reached.iters < 1000
    assert reached.weights.sum() == pytest.approx(1) and reached.weights[0] > 0.5
    capped = fit_weights_loss(scores, labels, mode, loss_threshold=0.0, max_iters=7)
    assert not capped.converged and capped.iters == 7
    at_once = fit_weights_loss(scores, labels, mode, loss_threshold=10.0)
    assert at_once.iters == 0 and at_once.weights == pytest.approx([0.5, 0.5])


def test_one_network_per_modality_and_the_fused_score_of_their_outputs():
    cfg = ScoreFusionConfig(modalities=[ModalitySpec("visible"), ModalitySpec("clip", dims=3, init="scratch")])
    net = ScoreFusionNet(cfg, weights=[0.7, 0.3], pretrained=False).eval()
    inputs = {"visible": torch.randn(2, 3, 32, 32), "clip": torch.randn(2, 3, 4, 32, 32)}
    with torch.no_grad():
        scores, fused = net(inputs)
    assert scores.shape == (2, 2) and ((scores > 0) & (scores < 1)).all()
    assert torch.allclose(fused, 0.7 * scores[:, 0] + 0.3 * scores[:, 1])
    with pytest.raises(ValueError, match="at least two"):
        ScoreFusionNet(ScoreFusionConfig(modalities=[ModalitySpec("visible")]))
