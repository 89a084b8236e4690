"""MUPPET's two sweeps over a number, one panel per end task, a point per value (mean over seeds,
error bar one standard deviation, `n=` seeds where points differ in it):
- `scale` (its Figure 1): the end task's metric against the number of pre-finetuning tasks
  (len(muppet.tasks)), one line per setting; a recipe without a pre-finetuning stage is a point at 0.
- `low_resource` (its section 5.3): the metric against the share of the end task's train set the run
  fine-tuned on (data.train_fraction), one line per setting (with and without pre-finetuning).
The metric is the test figure, or the dev figure in a panel where some run has no test split (the
axis says which)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from .. import rundir
from ..errors import TartanError
from . import group_by_setting, plots, pyplot, read_config, save


def panel_split(run_dirs: list[Path]) -> str:
    """test where every run of the panel has it, else dev for all: one point never averages a test
    figure with a dev one (as `tartan report` switches a whole end task to dev)."""
    return "test" if all(rundir.read_metrics(d).get("test") for d in run_dirs) else "dev"


def end_metric(run_dir: Path, split: str) -> tuple[str, float]:
    """(metric, value x100) of a finished run on `split`."""
    metrics = rundir.read_metrics(run_dir)
    if not metrics.get(split):
        raise TartanError(f"no {split} figures", Path(run_dir) / rundir.METRICS)
    return metrics["metric"], 100 * metrics[split][metrics["metric"]]


def task_count(config: dict) -> int:
    tasks = (config.get("muppet") or {}).get("tasks") or []
    return len(tasks) if config.get("method") == "muppet" else 0


def train_percent(config: dict) -> float:
    return 100 * float((config.get("data") or {}).get("train_fraction", 1.0))


def by_end_task(run_dirs: list[Path]) -> dict[str, list[Path]]:
    tasks: dict[str, list[Path]] = {}
    for run_dir in run_dirs:
        tasks.setdefault(str(read_config(run_dir).get("end_task")), []).append(Path(run_dir))
    return dict(sorted(tasks.items()))


def draw_panels(lines_of: Callable[[list[Path]], dict[str, list[Path]]], x_of: Callable[[dict], float],
                run_dirs: list[Path], xlabel: str, output: Path, log_x: bool = False) -> Path:
    """One panel per end task; `lines_of` splits its runs into labelled lines, `x_of` places a run."""
    if not run_dirs:
        raise TartanError("no run directories to plot")
    plt = pyplot()
    tasks = by_end_task(run_dirs)
    figure, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.8), squeeze=False)
    for ax, (end_task, dirs) in zip(axes[0], tasks.items()):
        points, names, split = [], set(), panel_split(dirs)
        for label, line in lines_of(dirs).items():
            values: dict[float, list[float]] = {}
            for run_dir in line:
                metric, value = end_metric(run_dir, split)
                names.add(f"{split} {metric}")
                values.setdefault(x_of(read_config(run_dir)), []).append(value)
            xs = sorted(values)
            mean = [float(np.mean(values[x])) for x in xs]
            spread = [float(np.std(values[x], ddof=1)) if len(values[x]) > 1 else 0.0 for x in xs]
            drawn = ax.errorbar(xs, mean, yerr=spread, marker="o", capsize=3, label=label)
            points += [(x, m, len(values[x]), drawn.lines[0].get_color()) for x, m in zip(xs, mean)]
        if len({seeds for *_, seeds, _ in points}) > 1:  # a half-done sweep: say what each point averages
            for x, m, seeds, colour in points:
                ax.annotate(f"n={seeds}", (x, m), textcoords="offset points", xytext=(4, 4), fontsize=7, color=colour)
        if log_x:
            ax.set_xscale("log")
        ax.set_title(end_task)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(" / ".join(sorted(names)) + " (x100)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    figure.tight_layout()
    return save(figure, output)


@plots.register("scale")
def plot_scale(run_dirs: list[Path], output: Path, pool: tuple[str, ...] = ()) -> Path:
    """Each end task's metric against the number of pre-finetuning tasks, one line per setting but
    for the task list (with and without R3F, say); a recipe without pre-finetuning is a point at 0."""
    return draw_panels(lambda dirs: group_by_setting(dirs, axis=("muppet.tasks",), pool=pool), task_count,
                       run_dirs, "pre-finetuning tasks (0: none)", output)


@plots.register("low_resource")
def plot_low_resource(run_dirs: list[Path], output: Path, pool: tuple[str, ...] = ()) -> Path:
    """Each end task's metric against the share of its train set, one line per setting."""
    return draw_panels(lambda dirs: group_by_setting(dirs, axis=("data.train_fraction",), pool=pool), train_percent,
                       run_dirs, "share of the end task's train set (%)", output, log_x=True)
