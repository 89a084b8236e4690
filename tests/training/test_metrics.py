"""tartan.training.metrics: macro-F1, micro-F1 and accuracy, checked against figures worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest

from tartan.training.metrics import classification_metrics


def test_metrics_of_a_small_example_worked_by_hand():
    gold = np.array([0, 0, 1, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0, 2])
    # class 0: tp 1, fp 1 (the 6th), fn 1 (the 2nd): P 1/2, R 1/2, F1 1/2
    # class 1: tp 2, fp 1 (the 2nd), fn 0: P 2/3, R 1, F1 4/5
    # class 2: tp 2, fp 0, fn 1 (the 6th): P 1, R 2/3, F1 4/5
    metrics = classification_metrics(gold, predicted)
    assert metrics == pytest.approx({"macro_f1": (1 / 2 + 4 / 5 + 4 / 5) / 3, "micro_f1": 5 / 7, "accuracy": 5 / 7})
    assert all(type(value) is float for value in metrics.values())  # JSON-ready, not numpy scalars


def test_a_class_never_predicted_scores_zero_without_a_warning(recwarn):
    # class 0: P 1/3, R 1, F1 1/2; classes 1 and 2 never predicted: F1 0
    metrics = classification_metrics(np.array([0, 1, 2]), np.array([0, 0, 0]))
    assert metrics == pytest.approx({"macro_f1": 1 / 6, "micro_f1": 1 / 3, "accuracy": 1 / 3})
    assert not [w for w in recwarn if "ill-defined" in str(w.message)]


def test_macro_f1_weighs_every_class_alike_micro_f1_every_example():
    gold = np.array([0] * 8 + [1, 2])
    predicted = np.array([0] * 8 + [0, 0])  # the big class right, both small ones wrong
    metrics = classification_metrics(gold, predicted)
    # class 0: P 8/10, R 1, F1 8/9; classes 1 and 2: F1 0
    assert metrics == pytest.approx({"macro_f1": (8 / 9) / 3, "micro_f1": 0.8, "accuracy": 0.8})


def test_all_right_is_one():
    gold = np.array([2, 0, 1, 1])
    assert classification_metrics(gold, gold.copy()) == {"macro_f1": 1.0, "micro_f1": 1.0, "accuracy": 1.0}
