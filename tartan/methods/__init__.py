"""Methods as lists of stages (the table of DESIGN.md). A method is a function config -> stages;
add one: a file here with `@methods.register`."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

from ..config import Config
from ..registry import Registry


@dataclass
class Stage:
    name: str
    # (task name, task type, options) of every task trained in this stage; the first is the end task
    tasks: list[tuple[str, str, dict]]
    weighting: str = "static"
    weighting_options: dict = field(default_factory=dict)
    # the config section with this stage's budget and optimizer settings: `train` or `pretrain`
    train_section: str = "train"
    # a stage that depends on nothing seed-specific (pre-training) is computed once and reused by
    # every run whose config of it is the same
    reusable: bool = False
    # task -> task whose (earlier-trained) head initialises its head, e.g. TAPT after DAPT
    head_init: dict[str, str] = field(default_factory=dict)
    # a stage that only refines the previous one (final fine-tuning): its result is kept only if it
    # improves the end task's dev metric, else the previous stage's best weights are restored
    keep_if_better: bool = False
    # which tasks contribute a batch at each step (training/sampling.py): `all` of them, or a
    # MUPPET batching scheme; `draws_per_step` batches a step for the schemes that draw
    sampling: str = "all"
    sampling_options: dict = field(default_factory=dict)
    # `end_task`: evaluate and early-stop on the first task's dev metric; `mean`: on the mean of
    # every task's dev metric (pre-finetuning has no end task)
    select_on: str = "end_task"
    # R3F regulariser on every task of the stage: {"eps", "noise", "lambda"}, or None
    r3f: dict | None = None
    # the stage's heads are removed when it ends (pre-finetuning heads are not carried on)
    drop_heads: bool = False

    @property
    def task_names(self) -> list[str]:
        return [name for name, _, _ in self.tasks]


methods: Registry[Callable[[Config], list[Stage]]] = Registry("method")

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
