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

    @property
    def task_names(self) -> list[str]:
        return [name for name, _, _ in self.tasks]


methods: Registry[Callable[[Config], list[Stage]]] = Registry("method")

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
