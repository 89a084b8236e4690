"""Plots that read run directories only (the contract of DESIGN.md). Add one: a file here with
`@plots.register("name")` on a function (run_dirs, output) -> output."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Callable

from ..registry import Registry

plots: Registry[Callable[[list[Path], Path], Path]] = Registry("plot")


def pyplot():
    """matplotlib without a screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
