"""Classification metrics of the training jobs' validation and of ``mediascore eval``, from scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties counted half); NaN when the labels hold only one class."""
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores, np.float64)))


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUROC, accuracy and F1 of the positive class at ``threshold``."""
    labels, pred = np.asarray(labels).astype(bool), np.asarray(probs) >= threshold
    acc = float(accuracy_score(labels, pred)) if len(labels) else float("nan")
    f1 = float(f1_score(labels, pred, zero_division=0.0))
    return {"auroc": auroc(labels, probs), "accuracy": acc, "f1": f1}
