"""Classification metrics of the training jobs' validation and of ``mediascore eval``, from scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties counted half); NaN when the labels hold only one class."""
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores, np.float64)))


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUROC, and accuracy, F1, precision and recall of the positive class at ``threshold``."""
    labels, pred = np.asarray(labels).astype(bool), np.asarray(probs) >= threshold
    acc = float(accuracy_score(labels, pred)) if len(labels) else float("nan")
    return {
        "auroc": auroc(labels, probs),
        "accuracy": acc,
        "f1": float(f1_score(labels, pred, zero_division=0.0)),
        "precision": float(precision_score(labels, pred, zero_division=0.0)),
        "recall": float(recall_score(labels, pred, zero_division=0.0)),
    }


def operating_threshold(labels: np.ndarray, probs: np.ndarray, target_precision: float | None) -> float:
    """The decision threshold chosen on a validation split.

    With ``target_precision``: the lowest score threshold whose precision reaches it (the largest recall at that
    precision); when no threshold reaches it, or with ``None``, the threshold of the largest F1. 0.5 when the
    labels hold only one class. A threshold is one of the scores, so "at or above" counts that row positive.
    """
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return 0.5
    precision, recall, thresholds = precision_recall_curve(labels, np.asarray(probs, np.float64))
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    if target_precision is not None:
        reached = np.flatnonzero(precision >= target_precision)
        if len(reached):
            return float(thresholds[reached[0]])  # thresholds ascend: the first reached is the lowest
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1))])
