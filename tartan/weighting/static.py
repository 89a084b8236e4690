from __future__ import annotations

import torch

from . import WeightingStrategy, strategies


@strategies.register("static")
class StaticWeighting(WeightingStrategy):
    """Fixed weights (uniform unless given), normalised to sum to 1: one backward of the weighted sum
    of the losses, no per-task gradients."""

    def __init__(self, task_names: list[str], end_task: str, weights: dict[str, float] | None = None, **options):
        super().__init__(task_names, end_task)
        raw = {name: float((weights or {}).get(name, 1.0)) for name in self.task_names}
        total = sum(raw.values())
        self.weights = {name: value / total for name, value in raw.items()}

    def backward(self, losses: dict[str, torch.Tensor], accelerator, model) -> dict[str, float]:
        total = sum(self.weights[name] * loss for name, loss in losses.items())
        accelerator.backward(total)
        return self.weights
