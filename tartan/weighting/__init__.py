"""Weighting strategies (LibMTL-style): each turns the per-task losses of a step into gradients on the
model and returns the task weights it used. A strategy that needs per-task gradients computes them
itself, so one that does not (static) never pays for them. Add one: a file here with
`@strategies.register`."""
from __future__ import annotations

import importlib
import pkgutil

import torch

from ..registry import Registry


class WeightingStrategy:
    def __init__(self, task_names: list[str], end_task: str, **options):
        self.task_names = list(task_names)
        self.end_task = end_task

    def backward(self, losses: dict[str, torch.Tensor], accelerator, model) -> dict[str, float]:
        """Leave the gradients of this step in the parameters' .grad; return the weights used."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """What resume needs (e.g. learned weight logits); plain JSON values."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


strategies: Registry[type[WeightingStrategy]] = Registry("weighting strategy")

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
