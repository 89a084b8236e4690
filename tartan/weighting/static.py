from __future__ import annotations

import torch

from ..errors import TartanError
from . import StepInputs, WeightingStrategy, strategies


@strategies.register("static")
class StaticWeighting(WeightingStrategy):
    """Fixed weights (uniform unless given), normalised to sum to 1: one backward of the weighted sum
    of the losses, no per-task gradients."""

    def __init__(self, task_names: list[str], end_task: str, weights: dict[str, float] | None = None, **options):
        super().__init__(task_names, end_task)
        unknown = sorted(set(weights or {}) - set(self.task_names))
        if unknown:
            raise TartanError(f"multitask.weights names {', '.join(unknown)}, not a task of this stage "
                              f"({', '.join(self.task_names)})")
        raw = {name: float((weights or {}).get(name, 1.0)) for name in self.task_names}
        if sum(raw.values()) <= 0:
            raise TartanError("multitask.weights must give some task a positive weight")
        total = sum(raw.values())
        self.weights = {name: value / total for name, value in raw.items()}

    def backward(self, losses: dict[str, torch.Tensor], inputs: StepInputs) -> dict[str, float]:
        total = sum(self.weights[name] * loss for name, loss in losses.items())
        inputs.backward(total)
        return self.weights
