"""tartan report: grouping by config minus the seed, permutation p-values, the three output formats."""
from __future__ import annotations

import csv
import io
import itertools
import json

import numpy as np
import pytest
import yaml

from tartan.cli import main
from tartan.errors import TartanError
from tartan.report import _mean_std, _p_text, _smallest_p, build_report, permutation_p_value, to_csv, to_latex, to_markdown


def enumerated_p_value(a: list[float], b: list[float]) -> float:
    """The two-sided p-value from every split of the pooled values into groups of len(a) and len(b):
    twice the smaller tail of the difference of means, at most 1."""
    pooled, observed = a + b, np.mean(a) - np.mean(b)
    diffs = []
    for chosen in itertools.combinations(range(len(pooled)), len(a)):
        first = [pooled[i] for i in chosen]
        second = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        diffs.append(np.mean(first) - np.mean(second))
    diffs = np.array(diffs)
    eps = 1e-12
    return min(1.0, 2 * min(np.mean(diffs <= observed + eps), np.mean(diffs >= observed - eps)))


def test_p_value_of_fully_separated_groups_is_two_of_twenty_splits():
    # 6 values into 3 + 3: 20 splits; only {1,2,3} vs {4,5,6} and its mirror are as extreme
    assert permutation_p_value([1, 2, 3], [4, 5, 6]) == pytest.approx(2 / 20)


@pytest.mark.parametrize("a, b", [([0.5, 2.0, 7.0], [1.0, 1.5, 3.0, 2.5]), ([66.4, 64.5, 62.6], [65.2, 62.3, 61.1]),
                                  ([1.0, 1.0, 2.0], [1.0, 2.0, 2.0, 2.0, 3.0])])
def test_p_value_equals_the_enumerated_permutation_distribution(a, b):
    assert permutation_p_value(a, b) == pytest.approx(enumerated_p_value(a, b))


def test_splits_tied_with_the_observed_one_count_as_ties_when_the_metric_is_a_count_out_of_n():
    # correct answers out of 3,469 (CHEMPROT's test set): three other splits have the observed
    # difference exactly, but their float means differ from it in the 14th digit
    n = 3469
    a, b = [100 * k / n for k in (1794, 1791, 1793, 1796)], [100 * k / n for k in (1797, 1795, 1795, 1795)]
    assert permutation_p_value(a, b) == pytest.approx(0.2)  # 14 of 70 splits as far below, doubled
    rng = np.random.default_rng(0)
    for _ in range(20):
        counts = rng.integers(78, 88, size=10)  # accuracy out of ACL-ARC's 139 test examples
        a, b = [100 * k / 139 for k in counts[:5]], [100 * k / 139 for k in counts[5:]]
        assert permutation_p_value(a, b) == pytest.approx(enumerated_p_value(a, b))


def test_sampled_splits_never_give_a_p_below_their_floor_and_the_table_never_prints_zero(tmp_path):
    # 8 seeds a side: 12,870 splits, more than 10,000, so the test samples them
    assert _smallest_p(8, 8) == pytest.approx(2 / 10_001)
    assert _smallest_p(5, 5, permutations=100) == pytest.approx(2 / 101)  # 252 splits, 100 sampled
    assert _smallest_p(5, 5) == pytest.approx(2 / 252)  # enumerated
    separated = permutation_p_value([float(v) for v in range(8)], [float(v) for v in range(10, 18)])
    assert 2 / 10_001 <= separated < 0.001
    assert _p_text(separated) == f"{separated:.1e}" and _p_text(0.0123) == "0.012" and _p_text(None) == "-"
    # sampling: close to the enumerated p of groups that overlap
    a, b = [1.0, 4.0, 2.0, 7.0, 3.0, 5.0, 6.0, 0.5], [2.5, 3.5, 8.0, 9.0, 4.5, 6.5, 7.5, 5.5]
    assert permutation_p_value(a, b) == pytest.approx(enumerated_p_value(a, b), abs=0.02)


def test_p_value_needs_two_seeds_a_side():
    assert np.isnan(permutation_p_value([1.0], [2.0, 3.0]))
    assert np.isnan(permutation_p_value([2.0, 3.0], [1.0]))
    # two a side is enough: 6 splits, the observed one and its mirror the most extreme
    assert permutation_p_value([1.0, 2.0], [3.0, 4.0]) == pytest.approx(2 / 6)


def test_smallest_reachable_p_is_two_splits_of_all():
    assert _smallest_p(3, 3) == pytest.approx(2 / 20)
    assert _smallest_p(5, 3) == pytest.approx(2 / 56)
    assert _smallest_p(2, 2) == pytest.approx(2 / 6)
    assert np.isnan(_smallest_p(1, 1))  # one seed on a side: no test
    assert np.isnan(_smallest_p(1, 5)) and np.isnan(_smallest_p(5, 1)) and np.isnan(_smallest_p(2, 1))


def test_mean_and_sample_standard_deviation():
    assert _mean_std([60.0, 62.0, 67.0]) == pytest.approx((63.0, 3.6055512754639891))
    mean, std = _mean_std([61.5])
    assert mean == 61.5 and np.isnan(std)  # one seed: no spread
    assert all(np.isnan(v) for v in _mean_std([]))


def write_run(folder, method, seed, test, dev=None, metric="macro_f1", end_task="citation_intent", **config):
    folder.mkdir(parents=True)
    resolved = {"name": method, "method": method, "end_task": end_task, "seed": seed, "output_dir": str(folder),
                "train": {"lr_body": 1e-4, "progress": seed % 2 == 0}, **config}
    (folder / "config.yaml").write_text(yaml.safe_dump(resolved))
    scores = lambda value: {"macro_f1": value, "micro_f1": value, "accuracy": value, "loss": 1.0}
    (folder / "metrics.json").write_text(json.dumps({
        "name": method, "method": method, "end_task": end_task, "seed": seed, "metric": metric,
        "dev": scores(dev if dev is not None else test), "test": scores(test)}))
    return folder


@pytest.fixture()
def runs(tmp_path):
    root = tmp_path / "root"
    for seed, (base, mt) in enumerate([(0.64, 0.70), (0.66, 0.71), (0.62, 0.69)]):
        write_run(root / "finetune" / f"seed{seed}", "finetune", seed, base)
        write_run(root / "mt_tartan" / f"seed{seed}", "mt_tartan", seed, mt, dev=mt + 0.01)
    # the same recipe with another learning rate: a group of its own, never mixed with the others
    write_run(root / "mt_tartan_lr" / "seed0", "mt_tartan", 0, 0.10, train={"lr_body": 3e-4})
    write_run(root / "chem" / "seed0", "finetune", 0, 0.80, metric="micro_f1", end_task="chemprot")
    (root / "finetune" / "seed0" / "checkpoint").mkdir()  # not a run, though inside one
    return root


def test_groups_are_configs_minus_the_seed(runs):
    report = build_report([runs], "finetune")["tasks"]
    assert sorted(report) == ["chemprot", "citation_intent"]
    base, rows = report["citation_intent"]
    assert base.label == "finetune" and rows[0].group is base and rows[0].p_value is None
    by_label = {row.group.label: row for row in rows}
    assert set(by_label) == {"finetune", "mt_tartan [train.lr_body=0.0001]", "mt_tartan [train.lr_body=0.0003]"}
    mt = by_label["mt_tartan [train.lr_body=0.0001]"]
    assert sorted(mt.group.seeds) == [0, 1, 2] and sorted(mt.group.test) == pytest.approx([69, 70, 71])
    assert mt.p_value == pytest.approx(0.1)  # 3 against 3, fully separated
    assert np.isnan(by_label["mt_tartan [train.lr_body=0.0003]"].p_value)  # one seed: no test
    assert report["chemprot"][1][0].group.metric == "micro_f1"


def test_report_command_prints_and_writes_three_formats(runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", str(runs), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| mt_tartan [train.lr_body=0.0001] | 3 | 70.00 | 1.00 | 71.00 | 1.00 | 0.100 | - |" in printed
    assert "two-sided" in printed and "3 seeds: 0.1" in printed  # 2 of the C(6, 3) = 20 splits
    assert (out / "report.md").read_text().strip() == printed.strip()
    table = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    assert {row["method"] for row in table if row["end_task"] == "citation_intent"} >= {"finetune"}
    assert all(row["baseline"] == "finetune" and row["p_split"] == "test" for row in table)
    tex = (out / "report.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 2 and r"mt\_tartan" in tex and "70.00 $\\pm$ 1.00" in tex


def test_pooled_keys_make_one_row_and_the_report_says_which_seed_ran_at_which_value(tmp_path, capsys):
    root = tmp_path / "root"
    # seed 0 trained where bf16 is native, seeds 1-2 on a machine without it
    for seed, precision in enumerate(["bf16", "fp32", "fp32"]):
        write_run(root / "meta" / f"seed{seed}", "meta_tartan", seed, 0.6 + seed / 100,
                  train={"lr_body": 1e-4, "precision": precision}, pretrain={"precision": precision})
    write_run(root / "meta_lr" / "seed0", "meta_tartan", 0, 0.1, train={"lr_body": 3e-4, "precision": "bf16"})
    apart = {row.group.label: row.group.seeds for row in build_report([root], "meta_tartan")["tasks"]["citation_intent"][1]}
    assert len(apart) == 3  # unpooled, a row never mixes precisions
    for pool in (["--pool", "precision"], ["--pool", "train.precision", "--pool", "pretrain.precision"]):
        assert main(["report", str(root), "-o", str(tmp_path / "out"), "--baseline", "meta_tartan", *pool]) == 0
        printed = capsys.readouterr().out
        assert "| meta_tartan [train.lr_body=0.0001] | 3 | 61.00 | 1.00 |" in printed  # the label leaves precision out
        assert "| meta_tartan [train.lr_body=0.0003] | 1 |" in printed  # pooled over precision only
        assert ("- `meta_tartan [train.lr_body=0.0001]`: pretrain.precision, train.precision: bf16 (seed 0), "
                "fp32 (seeds 1 2)\n") in printed
        assert "[train.lr_body=0.0003]`" not in printed  # one value: nothing mixed, nothing said
        table = {row["method"]: row["pooled"]
                 for row in csv.DictReader(io.StringIO((tmp_path / "out" / "report.csv").read_text()))}
        assert table["meta_tartan [train.lr_body=0.0001]"] == "pretrain.precision, train.precision: bf16 (seed 0), fp32 (seeds 1 2)"
        assert table["meta_tartan [train.lr_body=0.0003]"] == ""
        tex = (tmp_path / "out" / "report.tex").read_text()  # the LaTeX table carries the note too
        assert (r"% pooled (--pool): meta\_tartan [train.lr\_body=0.0001]: pretrain.precision, train.precision: "
                "bf16 (seed 0), fp32 (seeds 1 2)\n") in tex and "0.0003]:" not in tex
    assert main(["report", str(root), "-o", str(tmp_path / "out"), "--pool", "train.precision"]) == 0
    assert "| meta_tartan [pretrain.precision=fp32, train.lr_body=0.0001] | 2 |" in capsys.readouterr().out
    assert main(["report", str(root), "-o", str(tmp_path / "out"), "--pool", "precison"]) == 2  # misspelt
    assert "--pool 'precison' names no config key of these runs" in capsys.readouterr().err


def test_a_pooled_key_some_runs_lack_is_listed_as_unset(tmp_path, capsys):
    root = tmp_path / "root"
    write_run(root / "seed0", "finetune", 0, 0.60, model_config={"hidden_dropout_prob": 0.2})
    write_run(root / "seed1", "finetune", 1, 0.62)  # a run without the key: the body's own dropout
    assert main(["report", str(root), "-o", str(tmp_path / "out"), "--pool", "hidden_dropout_prob"]) == 0
    printed = capsys.readouterr().out
    assert "| finetune | 2 |" in printed
    assert "- `finetune`: model_config.hidden_dropout_prob: (unset) (seed 1), 0.2 (seed 0)\n" in printed


def test_training_minutes_sum_the_stages_of_a_run_and_average_over_seeds(tmp_path, capsys):
    root = tmp_path / "root"
    # seed 1 loaded its DAPT stage from the store: it counts at the 600 s it took in seed 0
    for seed, finetune_seconds in enumerate([300.0, 420.0]):
        folder = write_run(root / "dapt" / f"seed{seed}", "dapt", seed, 0.6 + seed / 100)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["stages"] = {"dapt": {"train_seconds": 600.0, **({"reused": "store/dapt-1"} if seed else {})},
                             "finetune": {"train_seconds": finetune_seconds}}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    write_run(root / "finetune" / "seed0", "finetune", 0, 0.5)  # written before stages were recorded
    assert main(["report", str(root), "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "| dapt | 2 | 60.50 | 0.71 | 60.50 | 0.71 | - | 16.0 |" in printed  # (900 + 1020) / 2 s
    assert "| finetune | 1 | 50.00 | - | 50.00 | - | - | - |" in printed
    table = list(csv.DictReader(io.StringIO((tmp_path / "out" / "report.csv").read_text())))
    assert {row["method"]: row["train min"] for row in table} == {"dapt": "16.0", "finetune": "-"}


def test_masked_lm_stages_get_their_held_out_fit_in_a_second_table_each_stage_once(tmp_path, capsys):
    root = tmp_path / "root"
    stages = {0: (0.18, 240.0), 1: (0.18, 240.0), 2: (0.20, 220.0)}  # seed 1 reused seed 0's stage
    for seed, (accuracy, perplexity) in stages.items():
        folder = write_run(root / "tapt" / f"seed{seed}", "tapt", seed, 0.6)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["stages"] = {
            "tapt": {"train_seconds": 60.0, "best_dev": {"loss": 5.4, "perplexity": perplexity, "accuracy": accuracy}},
            "finetune": {"train_seconds": 60.0, "best_dev": {"macro_f1": 0.6, "accuracy": 0.7, "loss": 1.0}}}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    write_run(root / "finetune" / "seed0", "finetune", 0, 0.5)
    assert main(["report", str(root), "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "| tapt | 3 | 60.00 |" in printed  # the end task over its three seeds
    # two distinct stages; the fine-tuning stage has an accuracy but no perplexity: not a masked-LM row
    assert "| tapt | tapt | 2 | 19.00 ± 1.41 | 230.00 ± 14.14 |" in printed
    assert "| tapt | finetune |" not in printed and "| finetune | " not in printed.split("masked-token")[1]


def test_a_report_without_masked_lm_stages_has_no_second_table(runs, capsys):
    assert main(["report", str(runs)]) == 0
    assert "masked-token" not in capsys.readouterr().out


def test_an_end_task_without_a_test_split_is_compared_on_dev_and_says_so(tmp_path, capsys):
    root = tmp_path / "root"
    for seed, (base, mt) in enumerate([(0.60, 0.70), (0.61, 0.71), (0.62, 0.72)]):
        for method, dev in (("finetune", base), ("mt_tartan", mt)):
            folder = write_run(root / method / f"seed{seed}", method, seed, 0.0, dev=dev)
            metrics = json.loads((folder / "metrics.json").read_text())
            (folder / "metrics.json").write_text(json.dumps({**metrics, "test": None}))
    assert main(["report", str(root), "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "| mt_tartan | 3 | - | - | 71.00 | 1.00 | 0.100 | - |" in printed
    assert "permutation test of the dev (some runs have no test split) macro_f1" in printed
    table = list(csv.DictReader(io.StringIO((tmp_path / "out" / "report.csv").read_text())))
    assert {row["p_split"] for row in table} == {"dev"}
    assert "permutation test on dev" in (tmp_path / "out" / "report.tex").read_text()


def test_missing_baseline_leaves_p_values_out(runs, capsys):
    assert main(["report", str(runs / "mt_tartan"), "-o", str(runs / "x")]) == 0
    assert "no `finetune` runs on citation_intent" in capsys.readouterr().out


def test_a_named_baseline_that_matches_no_runs_is_an_error_that_lists_the_labels(runs, capsys):
    """A label that lost its brackets (the runs given differ in nothing else) would otherwise print a
    table without p-values as if that were meant."""
    assert main(["report", str(runs), "--baseline", "finetune [train.lr_body=0.0005]", "-o", str(runs / "x")]) == 2
    error = capsys.readouterr().err.strip()
    assert "baseline 'finetune [train.lr_body=0.0005]' matches no runs" in error and "finetune; " in error
    assert len(error.splitlines()) == 1 and not (runs / "x" / "report.md").exists()


def test_a_baseline_named_by_its_label_settles_same_named_groups_of_equal_seeds(runs, capsys):
    for seed, score in enumerate([0.50, 0.52, 0.51]):  # a second finetune setting, 3 seeds like the first
        write_run(runs / "finetune_long" / f"seed{seed}", "finetune", seed, score, train={"lr_body": 3e-4})
    assert main(["report", str(runs), "-o", str(runs / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert "ambiguous" in error and "--baseline 'finetune [train.lr_body=0.0001]'" in error
    base, rows = build_report([runs], "finetune [train.lr_body=0.0003]")["tasks"]["citation_intent"]
    assert base.label == "finetune [train.lr_body=0.0003]" and rows[0].group is base
    assert sorted(base.test) == pytest.approx([50, 51, 52])
    assert {row.group.label: row.p_value for row in rows}["finetune [train.lr_body=0.0001]"] == pytest.approx(0.1)


def test_a_baseline_label_names_the_baseline_of_an_end_task_whose_runs_share_its_settings(runs):
    """A sweep arm that has run on one end task only: the other end task's labels lack the arm's key,
    yet the same --baseline names the baseline there by its settings."""
    for seed, score in enumerate([0.50, 0.52, 0.51]):  # a second finetune setting on citation_intent only
        write_run(runs / "finetune_long" / f"seed{seed}", "finetune", seed, score, train={"lr_body": 3e-4})
    for seed in (1, 2):
        write_run(runs / "chem" / f"seed{seed}", "finetune", seed, 0.80 + seed / 100, metric="micro_f1", end_task="chemprot")
    for seed in range(3):
        write_run(runs / "chem_mt" / f"seed{seed}", "mt_tartan", seed, 0.70 + seed / 100, metric="micro_f1",
                  end_task="chemprot")
    report = build_report([runs], "finetune [train.lr_body=0.0001]", baseline_named=True)["tasks"]
    assert report["citation_intent"][0].label == "finetune [train.lr_body=0.0001]"
    base, rows = report["chemprot"]
    assert base.label == "finetune" and rows[0].group is base
    assert {row.group.label: row.p_value for row in rows}["mt_tartan"] == pytest.approx(0.1)
    # a setting that no chemprot run has leaves chemprot without a baseline, not with another one
    report = build_report([runs], "finetune [train.lr_body=0.0003]", baseline_named=True)["tasks"]
    assert report["chemprot"][0] is None and report["citation_intent"][0].label == "finetune [train.lr_body=0.0003]"
    assert report["citation_intent"][0].test == pytest.approx([50, 52, 51])
    assert build_report([runs], "finetune [train.no_such_key=0.0001]")["tasks"]["chemprot"][0] is None


@pytest.mark.parametrize("damage, message", [
    (lambda root: (root / "finetune" / "seed1" / "metrics.json").write_text('{"metric": "macro_f1",\n "test": }'),
     "finetune/seed1/metrics.json:2: malformed JSON"),
    (lambda root: write_run(root / "finetune_again" / "seed1", "finetune", 1, 0.5), "seed 1 twice in one group"),
])
def test_bad_input_is_one_line(damage, message, runs, capsys):
    damage(runs)
    assert main(["report", str(runs), "-o", str(runs / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not (runs / "out").exists()


def test_a_diverged_seed_shows_as_nan_and_gives_no_p_value(tmp_path, capsys):
    """A regression run whose predictions diverge scores pearson NaN (written to metrics.json as
    NaN): the row says so, and the permutation test, which would call it significant, is left out."""
    root = tmp_path / "root"
    for seed, (base, other) in enumerate([(0.60, 0.70), (0.62, float("nan")), (0.61, 0.69)]):
        write_run(root / "finetune" / f"seed{seed}", "finetune", seed, base)
        write_run(root / "tapt" / f"seed{seed}", "tapt", seed, other)
    assert np.isnan(permutation_p_value([70.0, float("nan"), 69.0], [60.0, 62.0, 61.0]))
    assert main(["report", str(root), "--baseline", "finetune", "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "| tapt | 3 | nan | nan | nan | nan | - |" in printed
    assert "| finetune | 3 | 61.00 | 1.00 | 61.00 | 1.00 | - |" in printed


def test_runs_are_found_under_a_root_inside_a_folder_named_checkpoint(runs, tmp_path):
    """Only a checkpoint folder below the root is skipped: the path above it is the user's."""
    moved = tmp_path / "checkpoint" / "sweep"
    moved.parent.mkdir()
    runs.rename(moved)
    assert len(build_report([moved], "finetune")["tasks"]["citation_intent"][1]) == 3


def test_no_runs_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_a_run_saved_before_a_key_existed_groups_with_runs_at_its_default(tmp_path):
    root = tmp_path / "root"
    # seed 0 written by an older tartan: no model_config, no muppet section; seed 1 spells them out
    write_run(root / "mt" / "seed0", "mt_tartan", 0, 0.70)
    write_run(root / "mt" / "seed1", "mt_tartan", 1, 0.72, model_config={},
              muppet={"tasks": [], "batching": "heterogeneous"})
    write_run(root / "mt" / "seed2", "mt_tartan", 2, 0.71, muppet={"batching": "batch_homogeneous"})
    rows = build_report([root], None)["tasks"]["citation_intent"][1]
    assert sorted(sorted(row.group.seeds) for row in rows) == [[0, 1], [2]]


def test_reference_figures_print_beside_their_recipe(runs, tmp_path, capsys):
    reference = tmp_path / "research.yaml"
    reference.write_text("citation_intent: {finetune: 66.03, mt_tartan: 71.58}\nchemprot: {tapt: 82.17}\n")
    out = tmp_path / "out"
    assert main(["report", str(runs), "-o", str(out), "--reference", str(reference)]) == 0
    printed, warned = capsys.readouterr()
    assert "| method | seeds | test mean | test std | dev mean | dev std | p | train min | reference |" in printed
    assert "| finetune | 3 | 64.00 | 2.00 | 64.00 | 2.00 | - | - | 66.03 |" in printed
    assert "| 0.100 | - | 71.58 |" in printed  # by recipe name, whatever else sets a group apart
    # chemprot has no tapt runs: no row for the figure, and a warning naming it
    assert "82.17" not in printed and "| finetune | 1 | 80.00 | - | 80.00 | - | - | - | - |" in printed
    assert "no runs for chemprot/tapt" in warned and "finetune" not in warned
    assert "71.58" in (out / "report.csv").read_text()
    assert r"& $p$ & reference \\" in (out / "report.tex").read_text()


@pytest.mark.parametrize("text, message", [("citation_intent: {finetune: high}\n", "citation_intent: expected a mapping"),
                                           ("- 1\n", "expected a mapping of end task"),
                                           ("a: [1\n", "malformed YAML")])
def test_bad_reference_file_is_one_line(text, message, runs, tmp_path, capsys):
    reference = tmp_path / "research.yaml"
    reference.write_text(text)
    assert main(["report", str(runs), "-o", str(tmp_path / "out"), "--reference", str(reference)]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and str(reference) in error and len(error.splitlines()) == 1


def test_every_row_of_an_end_task_is_shown_and_tested_on_the_baselines_metric(tmp_path):
    # an imbalanced task: accuracy sits 15 points above macro-F1 for the same runs
    for seed, value in enumerate([0.60, 0.61, 0.62]):
        write_run(tmp_path / "finetune" / f"seed{seed}", "finetune", seed, value)
        folder = write_run(tmp_path / "mt_tartan" / f"seed{seed}", "mt_tartan", seed, value, metric="accuracy")
        metrics = json.loads((folder / "metrics.json").read_text())
        for split in ("dev", "test"):
            metrics[split]["accuracy"] = value + 0.15
        (folder / "metrics.json").write_text(json.dumps(metrics))
    report = build_report([tmp_path], "finetune")
    base, rows = report["tasks"]["citation_intent"]
    mt = next(row for row in rows if row.group.name == "mt_tartan")
    assert mt.group.metric == "macro_f1" and mt.group.selected_on == "accuracy"
    assert mt.group.test == pytest.approx([60.0, 61.0, 62.0]) and mt.p_value == pytest.approx(1.0)
    printed = to_markdown(report, "finetune")
    assert "| mt_tartan | 3 | 61.00 | 1.00 |" in printed and "- `mt_tartan`: accuracy" in printed
    assert to_csv(report).splitlines()[-1].endswith(",accuracy")
    assert "% selected on accuracy, shown on macro\\_f1: mt\\_tartan" in to_latex(report)
    # a run without the baseline's metric is a one-line error naming its metrics.json
    metrics = json.loads((tmp_path / "mt_tartan" / "seed0" / "metrics.json").read_text())
    del metrics["test"]["macro_f1"]
    (tmp_path / "mt_tartan" / "seed0" / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(TartanError, match="no macro_f1 figure") as error:
        build_report([tmp_path], "finetune")
    assert error.value.path == str(tmp_path / "mt_tartan" / "seed0" / "metrics.json")
