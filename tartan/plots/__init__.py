"""Plots that read run directories only (the contract of DESIGN.md). Add one: a file here with
`@plots.register("name")` on a function (run_dirs, output, pool) -> output; `pool`: the keys whose values
one line or panel may mix, as `tartan report --pool` pools them."""
from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path
from typing import Callable

from ..errors import TartanError
from ..registry import Registry

plots: Registry[Callable[[list[Path], Path, tuple[str, ...]], Path]] = Registry("plot")


def pyplot():
    """matplotlib without a screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_config(run_dir: Path) -> dict:
    """The run's resolved config.yaml ({} if it has none)."""
    from .. import rundir

    return rundir.read_config(run_dir) if (Path(run_dir) / rundir.CONFIG).is_file() else {}


def group_by_setting(run_dirs: list[Path], axis: tuple[str, ...] = (), pool: tuple[str, ...] = ()) -> dict[str, list[Path]]:
    """Runs whose configs are equal but for the seed (and the `axis` keys, a plot's x axis) are seeds
    of one setting, one line or panel, labelled as `tartan report` labels its rows: the recipe name,
    plus the keys that tell it from a same-named setting (two variants of one recipe are never
    averaged together) unless they differ only in `pool` keys. A name spread over several end tasks
    is refused rather than drawn twice."""
    from ..report import check_pool, pool_names, pooled_keys, setting_of, setting_labels, values_by_key

    groups: dict[str, tuple[str, str, dict, list[Path]]] = {}
    pooled_runs: dict[str, list[tuple[object, dict]]] = {}  # group -> each run's (seed, pooled values)
    points: dict[str, dict[tuple[object, str], Path]] = {}  # group -> (seed, axis values) -> its run
    end_tasks: dict[str, set] = {}
    for run_dir in run_dirs:
        config = read_config(run_dir)
        name = config.get("name") or Path(run_dir).name
        full = setting_of(config)
        setting = {k: v for k, v in full.items() if k not in axis}
        keys = pooled_keys(setting, pool)
        values = {k: setting.pop(k) for k in keys}
        key = json.dumps([name, setting], sort_keys=True, default=str)
        groups.setdefault(key, (str(config.get("end_task")), name, setting, []))[3].append(Path(run_dir))
        # a seed twice at one point of a line (`pool` over a key whose values share seeds): refused, as
        # the report refuses it, rather than averaged as if they were two seeds
        point = (config.get("seed"), json.dumps({k: full.get(k) for k in axis}, sort_keys=True, default=str))
        seen = points.setdefault(key, {})
        if point[0] is not None and point in seen:
            raise TartanError(f"seed {point[0]} twice in one line (also in {seen[point]})", Path(run_dir) / "config.yaml")
        seen[point] = Path(run_dir)
        pooled_runs.setdefault(key, []).append((config.get("seed"), values))
        end_tasks.setdefault(name, set()).add(config.get("end_task"))
    for name, tasks in end_tasks.items():
        if len(tasks) > 1:
            raise TartanError(f"runs named {name!r} have several end tasks ({', '.join(sorted(map(str, tasks)))}): "
                              "plot one end task at a time")
    check_pool({k for runs in pooled_runs.values() for _, values in runs for k in values}, tuple(pool))
    labels = setting_labels([(end_task, name, setting) for end_task, name, setting, _ in groups.values()])
    named = {}
    for label, (key, (*_, dirs)) in zip(labels, groups.items()):
        # a line that mixes values of a pooled key says so, as the report's note under its table does
        mixed = pool_names({k for k, seeds_at in values_by_key(pooled_runs[key]).items() if len(seeds_at) > 1},
                           tuple(pool))
        named[label + (f" (pooled: {', '.join(mixed)})" if mixed else "")] = dirs
    return named


def check_output(output: Path) -> None:
    """A file format matplotlib writes, in a folder that can take it: a one-line error before the
    runs are read, not a traceback after."""
    from matplotlib.backend_bases import FigureCanvasBase

    from ..rundir import check_writable_folder

    formats = FigureCanvasBase.get_supported_filetypes()
    if Path(output).suffix.lstrip(".").lower() not in formats:
        raise TartanError("a plot's file must end in one of ." + ", .".join(sorted(formats)), output)
    check_writable_folder(Path(output).parent, "the plot's folder")


def save(figure, output: Path) -> Path:
    from ..rundir import check_writable_folder

    output = Path(output)
    check_writable_folder(output.parent, "the plot's folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=120)
    pyplot().close(figure)
    return output


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
