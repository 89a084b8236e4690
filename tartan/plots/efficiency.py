"""Data efficiency (the research's Figure 2): the end task's test metric against the auxiliary data
size as a multiple of |Train| (log axis), one line per setting (the recipe name, plus the keys that
tell same-named runs apart), error bars of one standard deviation over seeds. The size is the run's
`domain.size`: `Nx`, or a line count divided by the number of train examples of the end task."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import rundir
from ..data.readers import read_rows
from ..errors import TartanError
from . import group_by_setting, plots, pyplot, read_config, save


def size_multiple(config: dict, run_dir: Path) -> float:
    size = (config.get("domain") or {}).get("size")
    if size is None:
        raise TartanError("domain.size is not set: the auxiliary data size of this run is not known", run_dir)
    text = str(size).strip().lower()
    try:
        if text.endswith("x"):
            return float(text[:-1])
        lines = int(text)
    except ValueError:
        raise TartanError(f"domain.size {size!r} is neither Nx nor a line count", run_dir / rundir.CONFIG) from None
    train = next((p for p in sorted((Path(config["data_dir"]) / config["end_task"]).glob("train.*"))), None)
    if train is None:
        raise TartanError(f"domain.size is a line count ({size}) and the end task's train file is not found "
                          "to turn it into a multiple of |Train|", run_dir)
    return lines / sum(1 for _ in read_rows(train))


@plots.register("efficiency")
def plot_efficiency(run_dirs: list[Path], output: Path, pool: tuple[str, ...] = ()) -> Path:
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(6.5, 4.2))
    # runs that selected on different metrics: each line names its own, as the axis cannot
    metrics = {rundir.read_metrics(run_dir)["metric"] for run_dir in run_dirs}
    points: list[tuple[float, float, int, str]] = []
    for name, dirs in group_by_setting(run_dirs, axis=("domain.size",), pool=pool).items():
        by_size: dict[float, list[float]] = {}
        for run_dir in dirs:
            metrics = rundir.read_metrics(run_dir)
            metric = metrics["metric"]
            if metrics.get("test") is None:
                raise TartanError("no test figures (the end task has no test split): the efficiency plot "
                                  "draws the test metric", run_dir / rundir.METRICS)
            config = read_config(run_dir)
            by_size.setdefault(size_multiple(config, run_dir), []).append(100 * metrics["test"][metric])
        sizes = sorted(by_size)
        mean = [np.mean(by_size[s]) for s in sizes]
        spread = [np.std(by_size[s], ddof=1) if len(by_size[s]) > 1 else 0.0 for s in sizes]
        drawn = ax.errorbar(sizes, mean, yerr=spread, marker="o", capsize=3,
                            label=name + (f" ({metric})" if len(metrics) > 1 else ""))
        colour = drawn.lines[0].get_color()
        points += [(size, m, len(by_size[size]), colour) for size, m in zip(sizes, mean)]
    # a sweep plotted half-way has points of fewer seeds (a single seed shows no error bar, which
    # reads as "no spread"): then every point says how many seeds it averages
    if len({seeds for _, _, seeds, _ in points}) > 1:
        for size, m, seeds, colour in points:
            ax.annotate(f"n={seeds}", (size, m), textcoords="offset points", xytext=(5, 5), fontsize=7,
                        color=colour)
    ax.set_xscale("log")
    ax.set_xlabel("auxiliary data size (multiple of |Train|)")
    ax.set_ylabel(f"test {' / '.join(sorted(metrics))} (x100)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    figure.tight_layout()
    return save(figure, output)
