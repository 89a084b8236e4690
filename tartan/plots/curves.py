"""The end task's dev metric over training, one line per setting (the recipe name, plus the keys
that tell same-named runs apart), seeds averaged with a band of one standard deviation. Read from
log.jsonl: every evaluation of the end task (not a masked-LM stage's held-out accuracy, which
shares a name with the accuracy metric); the x axis is end-task
epochs, counted on through consecutive stages (a final fine-tuning continues where the multi-task
stage stopped)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import rundir
from ..errors import TartanError
from . import group_by_setting, plots, pyplot, save


def read_dev_curve(run_dir: Path) -> tuple[str, dict[float, float]]:
    """(metric, end-task epoch -> dev metric x100) of a finished run."""
    log_path = Path(run_dir) / rundir.LOG
    metrics = rundir.read_metrics(run_dir)
    if not log_path.is_file():
        raise TartanError(f"no {log_path.name} here: not a finished run", run_dir)
    metric, end_task = metrics["metric"], metrics.get("end_task")
    curve, offset, stage, last_epoch = {}, 0.0, None, 0.0
    for record in rundir.RunLog(Path(run_dir)).records():
        dev = record.get("dev") or {}
        # logs written before evaluations named their task hold no "task": the metric key decides
        if not isinstance(dev, dict) or metric not in dev or record.get("task", end_task) != end_task:
            continue
        epoch, value = record.get("epoch", 0), dev[metric]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (epoch, value)):
            raise TartanError(f"an evaluation record whose epoch or {metric} is not a number: {record}", log_path)
        if record.get("stage") != stage:
            offset, stage = offset + last_epoch, record.get("stage")
        last_epoch = float(epoch)
        curve[round(offset + last_epoch, 3)] = 100 * value
    return metric, curve


@plots.register("curves")
def plot_curves(run_dirs: list[Path], output: Path, pool: tuple[str, ...] = ()) -> Path:
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(6.5, 4.2))
    # runs that selected on different metrics: each line names its own, as the axis cannot
    metrics = {rundir.read_metrics(run_dir)["metric"] for run_dir in run_dirs}
    for name, dirs in group_by_setting(run_dirs, pool=pool).items():
        curves = []
        for run_dir in dirs:
            metric, curve = read_dev_curve(run_dir)
            curves.append(curve)
        # a seed that stopped early has no later points: each epoch averages the seeds that reached it
        epochs = sorted({e for c in curves for e in c})
        mean = np.array([np.mean([c[e] for c in curves if e in c]) for e in epochs])
        spread = np.array([np.std([c[e] for c in curves if e in c], ddof=1) if sum(e in c for c in curves) > 1
                           else 0.0 for e in epochs])
        (line,) = ax.plot(epochs, mean, marker="o", markersize=3, label=f"{name} ({len(dirs)}" + (f", {metric})" if len(metrics) > 1 else ")"))
        ax.fill_between(epochs, mean - spread, mean + spread, alpha=0.15, color=line.get_color())
    ax.set_xlabel("end-task epoch")
    ax.set_ylabel(f"dev {' / '.join(sorted(metrics))} (x100)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    return save(figure, output)
