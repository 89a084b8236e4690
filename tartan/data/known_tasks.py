"""What the literature reports for the tasks of the "Don't Stop Pretraining" release: the metric that
selects and compares (micro-F1 for CHEMPROT and RCT, macro-F1 for the rest)."""
from __future__ import annotations

MICRO_F1_TASKS = {"chemprot", "rct-20k", "rct-sample"}


def default_metric(task: str) -> str:
    return "micro_f1" if task in MICRO_F1_TASKS else "macro_f1"
