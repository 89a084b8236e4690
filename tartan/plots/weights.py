"""The task weights over training (the research's Figures 3-4): one panel per setting (the recipe
name, plus the keys that tell same-named runs apart), one line per task, seeds averaged with a band
of one standard deviation when several runs share a setting."""
from __future__ import annotations

import csv
import textwrap
from collections import defaultdict
from pathlib import Path

import numpy as np

from .. import rundir
from ..errors import TartanError
from . import group_by_setting, plots, pyplot, save


def read_task_weights(run_dir: Path) -> dict[str, dict[int, float]]:
    """task -> step -> weight."""
    path = Path(run_dir) / rundir.WEIGHTS
    if not path.is_file():
        raise TartanError(f"no {rundir.WEIGHTS} here: not a run of a multi-task method, or not finished", run_dir)
    weights: dict[str, dict[int, float]] = defaultdict(dict)
    with open(path, newline="") as rows:
        for number, row in enumerate(csv.DictReader(rows), start=2):
            try:
                weights[row["task"]][int(row["step"])] = float(row["weight"])
            except (KeyError, TypeError, ValueError):
                raise TartanError("expected step,task,weight with an integer step and a number", path, number) from None
    return weights


@plots.register("weights")
def plot_weights(run_dirs: list[Path], output: Path, pool: tuple[str, ...] = ()) -> Path:
    groups = {name: [read_task_weights(d) for d in dirs] for name, dirs in group_by_setting(run_dirs, pool=pool).items()}
    plt = pyplot()
    figure, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), sharey=True, squeeze=False)
    for ax, (name, runs) in zip(axes[0], groups.items()):
        for task in sorted({t for run in runs for t in run}):
            # a seed that stopped early has no later steps: each step averages the seeds that logged
            # it, as the curves plot does, rather than cutting every seed at the shortest
            steps = sorted({s for run in runs for s in run.get(task, {})})
            if not steps:
                continue
            at = [[run[task][s] for run in runs if s in run.get(task, {})] for s in steps]
            mean = np.array([np.mean(values) for values in at])
            (line,) = ax.plot(steps, mean, label=task)
            if len(runs) > 1:
                spread = np.array([np.std(values, ddof=1) if len(values) > 1 else 0.0 for values in at])
                ax.fill_between(steps, mean - spread, mean + spread, alpha=0.2, color=line.get_color())
        # wrapped: a pooled variant's label is longer than its panel is wide
        ax.set_title(textwrap.fill(f"{name} ({len(runs)} run{'s' if len(runs) > 1 else ''})", 48), fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0][0].set_ylabel("task weight")
    figure.tight_layout()
    return save(figure, output)
