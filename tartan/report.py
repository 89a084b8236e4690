"""`tartan report`: which method wins on each end task, and is the win real?

Reads run directories only (metrics.json + config.yaml). Runs are grouped by their resolved config
minus the seed (and minus what cannot change a result: the output folder, progress bars), so a row
never mixes runs that differ in anything else. Each row: mean, standard deviation and number of seeds
of the task's metric on test and dev, and a two-sided permutation-test p-value of the test metric
against the baseline row (difference of means, 10,000 random splits, exact when the
groups have fewer distinct splits than that). An end task without a test split is compared on dev,
and the table says so. Where runs have masked-LM stages (TAPT, DAPT), a second table gives each
stage's held-out masked-token accuracy and perplexity over the distinct stages a row's runs used."""
from __future__ import annotations

import csv
import io
import itertools
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import rundir
from .config import read_yaml, with_defaults
from .errors import TartanError

# beside the display settings (rundir.defining drops those): where the run and its data folder
# live (the same data may sit elsewhere on another machine), and the seed
IGNORED_KEYS = ("seed", "output_dir", "data_dir")
PERMUTATIONS = 10_000


@dataclass
class Group:
    end_task: str
    metric: str  # the metric the row shows: its end task's one metric, which its runs may not have selected on
    label: str  # the recipe name, plus the keys that tell it from a same-named group
    config: dict  # the flattened config shared by every run of the group
    seeds: list[int] = field(default_factory=list)
    test: list[float] = field(default_factory=list)
    dev: list[float] = field(default_factory=list)
    minutes: list[float] = field(default_factory=list)  # training time of each run that recorded it
    run_dirs: list[Path] = field(default_factory=list)
    # stage name -> held-out (masked-token accuracy %, perplexity) of each distinct masked-LM stage
    # the group's runs used: whether a stage fitted its objective reads beside what it did for the end
    # task. Runs that differ only in the fine-tuning seed share one stage (`pretrain.seed`), counted once
    masked_lm: dict[str, set[tuple[float, float]]] = field(default_factory=dict)
    # pooled key -> value -> the seeds that ran at it (`tartan report --pool`): what a row mixes, said
    pooled: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    selected_on: str = ""  # the metric the runs kept their best step on (their `metric`)
    scores: list[tuple[dict | None, dict | None]] = field(default_factory=list)  # each run's (test, dev) figures

    def show_on(self, metric: str) -> None:
        """Read the row's test and dev figures (x100) on `metric`."""
        for run_dir, (test, dev) in zip(self.run_dirs, self.scores):
            if any(split is not None and metric not in split for split in (test, dev)):
                raise TartanError(f"no {metric} figure, which the other rows of {self.end_task} are shown on",
                                  run_dir / rundir.METRICS)
        self.metric = metric
        self.test = [100 * test[metric] for test, _ in self.scores if test is not None]
        self.dev = [100 * dev[metric] for _, dev in self.scores if dev is not None]

    @property
    def name(self) -> str:
        return self.config.get("name") or self.config.get("method", "?")

    @property
    def method(self) -> str:
        return self.config.get("method", "?")


@dataclass
class Row:
    group: Group
    p_value: float | None  # None for the baseline itself, or without a baseline
    reference: float | None = None  # a published figure for this recipe name (--reference), if given
    split: str = "test"  # the split the p-value compares: dev only when some run has no test split


def find_runs(roots: list[Path]) -> list[Path]:
    """Every finished run directory under the roots (a folder with metrics.json and config.yaml)."""
    runs = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise TartanError("no such folder", root)
        candidates = [root / rundir.METRICS] if (root / rundir.METRICS).is_file() else sorted(root.rglob(rundir.METRICS))
        runs += [m.parent for m in candidates
                 if (m.parent / rundir.CONFIG).is_file()
                 # a stage's checkpoint below a run is not a run; a folder above the root may be named anything
                 and rundir.CHECKPOINT not in m.parent.relative_to(root).parts]
    if not runs:
        raise TartanError(f"no finished runs ({rundir.METRICS} beside {rundir.CONFIG}) under "
                          + ", ".join(map(str, roots)))
    return sorted(set(runs))


def _read(run_dir: Path) -> tuple[dict, dict]:
    config_path = run_dir / rundir.CONFIG
    metrics, config = rundir.read_metrics(run_dir), rundir.read_config(run_dir)
    if not isinstance(config, dict):
        raise TartanError("expected a mapping of config keys", config_path)
    for key, kind, what in (("name", str, "a name"), ("method", str, "a method's name"),
                            ("end_task", str, "a task's name"), ("seed", int, "an integer")):
        if key in config and (not isinstance(config[key], kind) or isinstance(config[key], bool)):
            raise TartanError(f"{key} must be {what}, got {config[key]!r}", config_path)
    return metrics, config


def _names(name: str, key: str) -> bool:
    """Whether a `--pool` name names a dotted key: the key itself, or its last part (`precision`)."""
    return key == name or key.rpartition(".")[2] == name


UNSET = "(unset)"  # a pooled key's value in a run whose config lacks the key


def pool_names(keys, pool: tuple[str, ...]) -> list[str]:
    """The `--pool` names that name any of `keys`, as the user spelled them (`precision`)."""
    return [name for name in pool if any(_names(name, k) for k in keys)]


def values_by_key(runs: list[tuple[object, dict]]) -> dict[str, dict[str, list]]:
    """Each pooled key -> its value -> the seeds that ran at it, from each run's (seed, values of its
    pooled keys); a run without a key others have (a section it predates) counts at UNSET."""
    keys = sorted({k for _, values in runs for k in values})
    table: dict[str, dict[str, list]] = {}
    for seed, values in runs:
        for key in keys:
            table.setdefault(key, {}).setdefault(str(values.get(key, UNSET)), []).append(seed)
    return table


def pooled_keys(settings: dict, pool: tuple[str, ...]) -> tuple[str, ...]:
    """The keys of a run's settings (`setting_of`) that `pool` names."""
    return tuple(k for k in settings if any(_names(name, k) for name in pool))


def check_pool(present: set[str], pool: tuple[str, ...]) -> None:
    """A `--pool` key that names none of the runs' keys (`present`: those it matched) is a mistake
    (`precison`), not a report or plot that pools nothing."""
    for name in pool:
        if not any(_names(name, k) for k in present):
            raise TartanError(f"--pool {name!r} names no config key of these runs (a dotted key such as "
                              "train.precision, or a bare name such as precision)")


def group_runs(run_dirs: list[Path], pool: tuple[str, ...] = ()) -> list[Group]:
    """Runs grouped by their settings minus the seed; runs that differ only in the `pool` keys are
    seeds of one group too, which records each pooled key's values and seeds."""
    groups: dict[str, Group] = {}
    pooled_runs: dict[str, list[tuple[object, dict]]] = {}  # group -> each run's (seed, pooled values)
    for run_dir in run_dirs:
        metrics, config = _read(run_dir)
        full = setting_of(config)
        pooled = pooled_keys(full, pool)
        flat = {k: v for k, v in full.items() if k not in pooled}
        key = json.dumps(flat, sort_keys=True, default=str)
        if key not in groups:
            groups[key] = Group(metrics.get("end_task") or flat.get("end_task", "?"), metrics["metric"], "", flat,
                                selected_on=metrics["metric"])
        group = groups[key]
        seed = metrics.get("seed", config.get("seed"))
        if seed in group.seeds:
            raise TartanError(f"seed {seed} twice in one group (also in {group.run_dirs[group.seeds.index(seed)]})",
                              run_dir / rundir.METRICS)
        group.seeds.append(seed)
        pooled_runs.setdefault(key, []).append((seed, {k: full[k] for k in pooled}))
        group.scores.append((metrics["test"], metrics.get("dev")))
        stages = metrics.get("stages") or {}
        if stages:
            # a stage loaded from the store counts at the time it took where it was trained: what
            # the run costs on its own, not what this run waited
            group.minutes.append(sum(stage.get("train_seconds", 0.0) for stage in stages.values()) / 60)
        for name, stage in stages.items():
            held_out = stage.get("best_dev") or {}
            if rundir.is_number(held_out.get("perplexity")) and rundir.is_number(held_out.get("accuracy")):
                # a stage reused from the store reports the figures of the run that trained it: equal
                # figures are one stage
                group.masked_lm.setdefault(name, set()).add((100 * held_out["accuracy"], held_out["perplexity"]))
        group.run_dirs.append(run_dir)
    for key, group in groups.items():
        group.pooled = values_by_key(pooled_runs[key])
        group.show_on(group.selected_on)
    _label(list(groups.values()))
    return sorted(groups.values(), key=lambda g: (g.end_task, g.label))


def setting_of(config: dict, ignore: tuple[str, ...] = ()) -> dict:
    """A run's saved config as the dotted keys that decide its result, minus the seed, where it lives
    and `ignore` (a plot's x axis): runs with equal settings are seeds of one another."""
    return {k: v for k, v in rundir.defining(with_defaults(config)).items() if k not in IGNORED_KEYS + tuple(ignore)}


def setting_labels(settings: list[tuple[str, str, dict]]) -> list[str]:
    """A label for each (end task, recipe name, setting): the name, plus the keys that tell it from
    the same-named settings of its end task (`meta_tartan [meta.head_batch=other]`)."""
    by_name: dict[tuple[str, str], list[int]] = {}
    for index, (end_task, name, _) in enumerate(settings):
        by_name.setdefault((end_task, name), []).append(index)
    labels = [""] * len(settings)
    for (_, name), indices in by_name.items():
        same = [settings[i][2] for i in indices]
        differing = sorted({k for c in same for k in c if any(other.get(k) != c.get(k) for other in same)})
        for index in indices:
            extra = ", ".join(f"{k}={settings[index][2].get(k)}" for k in differing)
            labels[index] = f"{name} [{extra}]" if extra else name
    return labels


def _label(groups: list[Group]) -> None:
    for group, label in zip(groups, setting_labels([(g.end_task, g.name, g.config) for g in groups])):
        group.label = label


def permutation_p_value(a: list[float], b: list[float], permutations: int = PERMUTATIONS, seed: int = 0) -> float:
    """Two-sided p-value of the difference of means of a and b under exchangeability: every split of
    the pooled values into groups of len(a) and len(b) where there are at most `permutations` of them,
    else `permutations` random splits (counted as scipy's permutation_test counts them, the observed
    split added once). Splits whose difference equals the observed one up to rounding count as ties:
    scipy's relative tolerance misses ties of metrics that are counts out of n (accuracy, micro-F1),
    whose float means differ in the 14th digit, and its p-values came out too small."""
    if len(a) < 2 or len(b) < 2:  # no test with a single seed on either side
        return math.nan
    if not all(math.isfinite(value) for value in (*a, *b)):  # a diverged run: no figure to compare
        return math.nan
    pooled = np.asarray([*a, *b], dtype=float)
    first = np.zeros((1, len(pooled)), dtype=bool)
    first[0, :len(a)] = True
    if math.comb(len(pooled), len(a)) <= permutations:
        chosen = np.array(list(itertools.combinations(range(len(pooled)), len(a))))
        added = 0  # the observed split is one of the enumerated ones
    else:
        chosen = np.argsort(np.random.default_rng(seed).random((permutations, len(pooled))), axis=1)[:, :len(a)]
        added = 1
    in_first = np.zeros((len(chosen), len(pooled)), dtype=bool)
    np.put_along_axis(in_first, chosen, True, axis=1)

    def differences(split: np.ndarray) -> np.ndarray:
        return (split @ pooled) / len(a) - (~split @ pooled) / len(b)

    observed, tolerance = differences(first)[0], 1e-9 * max(1.0, float(np.abs(pooled).max()))
    diffs = differences(in_first)
    lower, upper = np.sum(diffs <= observed + tolerance) + added, np.sum(diffs >= observed - tolerance) + added
    return min(1.0, 2 * min(lower, upper) / (len(diffs) + added))


def settings_match(group: Group, baseline: str) -> bool:
    """Whether `baseline`, written as a label (`NAME [k=v, ...]`), names this group's recipe and
    agrees with its config on every k=v. A label lists only the keys that differ among the end
    task's groups, so one end task's label can name a key that another's runs all share (a sweep arm
    that has run on one end task only): this lets one --baseline serve both."""
    name, bracket, settings = baseline.partition(" [")
    if not bracket or not settings.endswith("]") or group.name != name and group.method != name:
        return False
    pairs = [item.partition("=") for item in settings[:-1].split(", ")]
    return all(eq and key in group.config and f"{group.config[key]}" == value for key, eq, value in pairs)


def choose_baseline(groups: list[Group], baseline: str | None) -> Group | None:
    """The group of this end task whose label (as the report prints it), recipe name, method or,
    failing those, settings (`settings_match`) is `baseline`; of several, the one with the most seeds."""
    if baseline is None:
        return None
    matches = ([g for g in groups if g.label == baseline] or [g for g in groups if g.name == baseline]
               or [g for g in groups if g.method == baseline] or [g for g in groups if settings_match(g, baseline)])
    if not matches:
        return None
    most = max(len(g.seeds) for g in matches)
    best = [g for g in matches if len(g.seeds) == most]
    if len(best) > 1:
        raise TartanError(f"baseline {baseline!r} is ambiguous on {best[0].end_task}: "
                          + "; ".join(g.label for g in best) + f" (name one as the report labels it: --baseline '{best[0].label}')")
    return best[0]


def read_reference(path: Path) -> dict[str, dict[str, float]]:
    """Published figures to print beside the runs: YAML mapping end task -> recipe name -> figure
    (x100, as the report prints)."""
    path = Path(path)
    reference = read_yaml(path, "reference file") or {}
    if not isinstance(reference, dict):
        raise TartanError("expected a mapping of end task -> {recipe name: figure}", path)
    for end_task, figures in reference.items():
        if not isinstance(figures, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in figures.values()):
            raise TartanError(f"{end_task}: expected a mapping of recipe name -> number", path)
    return reference


def build_report(roots: list[Path], baseline: str = "finetune", permutations: int = PERMUTATIONS,
                 reference: Path | None = None, baseline_named: bool = False, pool: tuple[str, ...] = ()) -> dict:
    """{"permutations": n, "tasks": {end task: (baseline group, rows)}, "reference": its file or None}.
    `baseline_named`: the user named the baseline, so one that no end task's runs match is a mistake
    (a label misspelt, or one that lost its brackets because the runs differ in nothing else), not a
    report without p-values. `pool`: keys whose values a row may mix (seeds run at bf16 on one machine
    and fp32 on another, say); the markdown says which seeds ran at which value."""
    if permutations < 1:
        raise TartanError(f"--permutations must be positive, got {permutations}")
    published = read_reference(reference) if reference is not None else {}
    groups = group_runs(find_runs(roots), tuple(pool))
    check_pool({k for group in groups for k in group.pooled}, tuple(pool))
    report = {}
    for end_task in sorted({g.end_task for g in groups}):
        task_groups = [g for g in groups if g.end_task == end_task]
        base = choose_baseline(task_groups, baseline)
        task_groups.sort(key=lambda g: g is not base)  # the baseline first, the rest by label
        # one metric per end task, so that no row is compared on another metric than the baseline's;
        # a row whose runs selected their step on another one says so under the table
        selected = [g.selected_on for g in task_groups]
        metric = base.metric if base else max(sorted(set(selected)), key=selected.count)
        for group in task_groups:
            group.show_on(metric)
        figures = published.get(end_task, {})
        split = "test" if all(len(g.test) == len(g.seeds) for g in task_groups) else "dev"
        compared = (lambda g: g.test) if split == "test" else (lambda g: g.dev)
        rows = [Row(g, None if base is None or g is base else permutation_p_value(compared(g), compared(base), permutations),
                    figures.get(g.name), split) for g in task_groups]
        report[end_task] = (base, rows)
    if baseline_named and groups and all(base is None for base, _ in report.values()):
        raise TartanError(f"baseline {baseline!r} matches no runs (the report's labels: "
                          + "; ".join(sorted({g.label for g in groups})) + ")")
    unmatched = [f"{task}/{name}" for task, figures in published.items() for name in figures
                 if not any(g.end_task == task and g.name == name for g in groups)]
    if unmatched:  # most likely a misspelt recipe or end task name
        print(f"tartan report: {reference}: no runs for " + ", ".join(unmatched), file=sys.stderr)
    return {"permutations": permutations, "tasks": report, "reference": None if reference is None else str(reference)}


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values or not all(math.isfinite(value) for value in values):  # statistics refuses NaN
        return math.nan, math.nan
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def _shown(values: list[float]) -> tuple[str, str]:
    """Mean and std as the tables print them: "-" where there is none, "nan" where a seed diverged
    (a blank would hide it)."""
    if not all(math.isfinite(value) for value in values):
        return "nan", "nan"
    return tuple("-" if math.isnan(v) else f"{v:.2f}" for v in _mean_std(values))


def _cells(row: Row) -> dict[str, str]:
    (test_mean, test_std), (dev_mean, dev_std) = _shown(row.group.test), _shown(row.group.dev)
    return {"method": row.group.label, "seeds": str(len(row.group.seeds)),
            "test mean": test_mean, "test std": test_std, "dev mean": dev_mean, "dev std": dev_std,
            "p": _p_text(row.p_value),
            "train min": "-" if not row.group.minutes else f"{statistics.mean(row.group.minutes):.1f}",
            "reference": "-" if row.reference is None else f"{row.reference:.2f}"}


def _p_text(p_value: float | None) -> str:
    """Three decimals, or two significant digits below 0.001: a permutation p is never 0, and a table
    that printed `0.000` would say it was."""
    if p_value is None or math.isnan(p_value):
        return "-"
    return f"{p_value:.3f}" if p_value >= 0.001 else f"{p_value:.1e}"


COLUMNS = ("method", "seeds", "test mean", "test std", "dev mean", "dev std", "p", "train min")


def _columns(report: dict) -> tuple[str, ...]:
    return COLUMNS + ("reference",) if report.get("reference") else COLUMNS


def to_markdown(report: dict, baseline: str) -> str:
    parts, columns = [], _columns(report)
    for end_task, (base, rows) in report["tasks"].items():
        metric = rows[0].group.metric
        parts.append(f"### {end_task} ({metric}, x100)\n")
        parts.append("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
        for row in rows:
            cells = _cells(row)
            parts.append("| " + " | ".join(cells[c] for c in columns) + " |")
        if base:
            smallest = {len(r.group.seeds): _smallest_p(len(r.group.seeds), len(base.seeds), report["permutations"])
                        for r in rows[1:]}
            floor = ", ".join(f"{n} seeds: {p:.3g}" for n, p in sorted(smallest.items()) if not math.isnan(p)) or "-"
            split = rows[0].split if rows[0].split == "test" else "dev (some runs have no test split)"
            parts.append(f"\np: two-sided permutation test of the {split} {metric} against `{base.label}` "
                         f"(difference of means, {report['permutations']:,} permutations, exact when fewer "
                         f"distinct splits exist; the smallest p a row can reach: {floor}; no correction for "
                         "comparing several methods).\n")
        else:
            parts.append(f"\np: no `{baseline}` runs on {end_task}, so no p-values.\n")
        parts.append("train min: minutes of training per run, summed over its stages (a pre-training stage "
                     "reused from another run counted at the time it took there), mean over seeds.\n")
        parts += _pooled_lines(rows)
        parts += _selected_lines(rows)
        parts += _masked_lm_table(rows)
        if report.get("reference"):
            parts.append(f"reference: the figure for the recipe name in {report['reference']}.\n")
    return "\n".join(parts)


def _pooled_text(group: Group) -> str:
    """Which seeds ran at which value of each pooled key the group mixes ("" where it mixes none);
    keys that split the seeds alike share one entry (train.precision, pretrain.precision)."""
    keys_of: dict[str, list[str]] = {}
    for key, seeds_at in sorted(group.pooled.items()):
        if len(seeds_at) > 1:
            split = ", ".join(f"{value} (seed{'s' if len(seeds) > 1 else ''} {' '.join(map(str, sorted(seeds)))})"
                              for value, seeds in sorted(seeds_at.items()))
            keys_of.setdefault(split, []).append(key)
    return "; ".join(f"{', '.join(keys)}: {split}" for split, keys in keys_of.items())


def _pooled_lines(rows: list[Row]) -> list[str]:
    lines = [f"- `{row.group.label}`: {text}" for row in rows if (text := _pooled_text(row.group))]
    return ["pooled (--pool): these rows' seeds ran at more than one value of a key\n", *lines, ""] if lines else []


def _selected_lines(rows: list[Row]) -> list[str]:
    lines = [f"- `{row.group.label}`: {row.group.selected_on}" for row in rows if row.group.selected_on != row.group.metric]
    return ([f"selected on another metric: these rows' runs kept the step best on the metric named, and are shown "
             f"on {rows[0].group.metric} as the others are\n", *lines, ""] if lines else [])


def _masked_lm_table(rows: list[Row]) -> list[str]:
    """The masked-LM stages' held-out fit, a row per (group, stage); nothing when no run has one."""
    lines = []
    for row in rows:
        for stage, trained in row.group.masked_lm.items():
            cells = []
            for values in zip(*sorted(trained)):
                mean, std = _mean_std(list(values))
                cells.append(f"{mean:.2f}" + ("" if math.isnan(std) else f" ± {std:.2f}"))
            lines.append(f"| {row.group.label} | {stage} | {len(trained)} | {cells[0]} | {cells[1]} |")
    if not lines:
        return []
    return ["| method | stage | stages trained | masked-token accuracy % | perplexity |", "|---|---|---|---|---|",
            *lines,
            "\nmasked-LM stages: held-out masked-token accuracy and perplexity at the stage's best step; mean ± std "
            "over the distinct stages a row's runs used (runs that differ only in the fine-tuning seed share one "
            "stage, trained at `pretrain.seed`).\n"]


def _smallest_p(a: int, b: int, permutations: int = PERMUTATIONS) -> float:
    """Two-sided: the two most extreme of C(a+b, a) splits where the test enumerates them; where it
    samples `permutations` of them, the observed split it adds is the one count it cannot go below."""
    if a < 2 or b < 2:
        return math.nan
    splits = math.comb(a + b, a)  # C(4, 2) = 6 at the least
    return 2 / splits if splits <= permutations else 2 / (permutations + 1)


def to_csv(report: dict) -> str:
    out, columns = io.StringIO(), _columns(report)
    writer = csv.writer(out)
    writer.writerow(("end_task", "metric", *columns, "baseline", "p_split", "pooled", "selected_on"))
    for end_task, (base, rows) in report["tasks"].items():
        for row in rows:
            cells = _cells(row)
            if row.p_value is not None and not math.isnan(row.p_value):
                cells["p"] = f"{row.p_value:.6g}"  # a file to compute with keeps the digits a table rounds
            writer.writerow((end_task, row.group.metric, *(cells[c] for c in columns), base.label if base else "",
                             row.split, _pooled_text(row.group), row.group.selected_on))
    return out.getvalue()


_TEX = {"\\": r"\textbackslash{}", "_": r"\_", "&": r"\&", "%": r"\%", "#": r"\#", "$": r"\$",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(char, char) for char in text)


def to_latex(report: dict) -> str:
    parts, with_reference = [], bool(report.get("reference"))
    width = 6 if with_reference else 5
    for end_task, (base, rows) in report["tasks"].items():
        parts += [r"\begin{tabular}{l" + "r" * (width - 1) + "}", r"\toprule",
                  rf"\multicolumn{{{width}}}{{l}}{{{_tex(end_task)} ({_tex(rows[0].group.metric)})}} \\",
                  r"method & seeds & test & dev & $p$" + (" & reference" if with_reference else "") + r" \\",
                  r"\midrule"]
        for row in rows:
            cells = _cells(row)
            parts.append(f"{_tex(cells['method'])} & {cells['seeds']} & {cells['test mean']} $\\pm$ {cells['test std']} "
                         f"& {cells['dev mean']} $\\pm$ {cells['dev std']} & {cells['p']}"
                         + (f" & {cells['reference']}" if with_reference else "") + " \\\\")
        parts += [r"\bottomrule", r"\end{tabular}"]
        if rows[0].split != "test":
            parts.append(f"% p: permutation test on dev ({_tex(end_task)} has runs without a test split)")
        # a comment, as the p note: which seeds ran at which value stays with the table it qualifies
        parts += [f"% pooled (--pool): {_tex(row.group.label)}: {_tex(text)}" for row in rows
                  if (text := _pooled_text(row.group))]
        parts += [f"% selected on {_tex(row.group.selected_on)}, shown on {_tex(row.group.metric)}: {_tex(row.group.label)}"
                  for row in rows if row.group.selected_on != row.group.metric]
        parts.append("")
    return "\n".join(parts)


def write_report(report: dict, baseline: str, output_dir: Path) -> dict[str, Path]:
    """report.md, report.csv and report.tex in output_dir, each written atomically."""
    rundir.check_writable_folder(Path(output_dir), "the report's folder")
    paths = {}
    for suffix, text in (("md", to_markdown(report, baseline)), ("csv", to_csv(report)), ("tex", to_latex(report))):
        paths[suffix] = Path(output_dir) / f"report.{suffix}"
        rundir.write_text_atomic(paths[suffix], text)
    return paths
