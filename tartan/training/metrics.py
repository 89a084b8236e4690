from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def classification_metrics(gold: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """macro-F1, micro-F1 and accuracy as fractions in [0, 1]."""
    return {
        "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(gold, predicted, average="micro", zero_division=0)),
        "accuracy": float(accuracy_score(gold, predicted)),
    }
