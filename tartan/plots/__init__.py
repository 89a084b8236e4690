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


def run_name(run_dir: Path) -> str:
    """The recipe name in the run's config.yaml (what groups seeds), else the folder's name."""
    import yaml

    from .. import rundir

    config = Path(run_dir) / rundir.CONFIG
    name = yaml.safe_load(config.read_text()).get("name") if config.is_file() else None
    return name or Path(run_dir).name


def group_by_name(run_dirs: list[Path]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for run_dir in run_dirs:
        groups.setdefault(run_name(run_dir), []).append(Path(run_dir))
    return groups


def save(figure, output: Path) -> Path:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=120)
    pyplot().close(figure)
    return output


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
