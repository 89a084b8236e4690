"""Weighting strategies (LibMTL-style): each turns the per-task losses of a step into gradients on the
model and returns the task weights it used. A strategy that needs per-task gradients computes them
itself, so one that does not (static) never pays for them. Add one: a file here with
`@strategies.register`."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable

import torch

from ..registry import Registry


@dataclass
class StepInputs:
    """What a strategy may look at besides the losses."""

    step: int  # optimizer steps taken before this one
    model: torch.nn.Module  # the MultiTaskModel: .body, .heads[task], .encode(batch)
    tasks: dict  # task name -> task
    batches: dict[str, dict[str, torch.Tensor]]  # this process's rows of each task's batch
    # each task's body output for its batch, detached: a strategy can reuse the step's forward pass
    features: dict[str, torch.Tensor]
    accelerator: object
    # batches each task drew this step so far (several for a task drawn more than once; its loss is their sum)
    draws: dict[str, int] | None = None
    # False while the step accumulates micro-batches (train.accumulate): the strategy adds this
    # micro-batch's gradients; on the last one it also does whatever it does once per step
    last_micro_batch: bool = True
    # rows of each task's global batch (this process holds its share of them: distributed.shard_rows)
    global_rows: dict[str, int] | None = None
    # what gradients are sent in between processes (train.reduce_dtype); None: their own dtype
    reduce_dtype: torch.dtype | None = None
    # the backward of a strategy whose update is one backward: the loop's, which starts averaging the
    # body's gradients across processes while it runs (training/averaging.py)
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward


class WeightingStrategy:
    # set by backward: the body's .grad it left are averaged across processes already (META mixes
    # averaged task gradients), so that the loop averages the heads' only
    body_averaged = False

    def __init__(self, task_names: list[str], end_task: str, **options):
        self.task_names = list(task_names)
        self.end_task = end_task

    def backward(self, losses: dict[str, torch.Tensor], inputs: StepInputs) -> dict[str, float]:
        """Leave the gradients of this step (this process's share) in the parameters' .grad, through
        `inputs.backward` where the update is one backward; the loop averages them across processes
        (and under fp16 unscales them: the losses come multiplied by the loss scale). Return the
        weights used."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """What resume needs (e.g. learned weight logits); plain JSON values."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


strategies: Registry[type[WeightingStrategy]] = Registry("weighting strategy")

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
