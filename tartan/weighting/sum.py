from __future__ import annotations

import torch

from . import StepInputs, WeightingStrategy, strategies


@strategies.register("sum")
class SumWeighting(WeightingStrategy):
    """One backward of the plain sum of the step's losses: MUPPET's task-heterogeneous update, whose
    gradient is the sum of the gradients of the batches it drew (a task drawn twice counts twice, its
    loss being the sum over its batches). Returns each task's share of the step's batches."""

    def backward(self, losses: dict[str, torch.Tensor], inputs: StepInputs) -> dict[str, float]:
        inputs.backward(sum(losses.values()))
        draws = inputs.draws or dict.fromkeys(losses, 1)
        total = sum(draws.values())
        return {name: draws.get(name, 0) / total for name in self.task_names}
