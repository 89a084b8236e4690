"""The scale and low-resource plots on fixture run directories."""
from __future__ import annotations

import json

import yaml

from tartan.cli import main
from tartan.plots.against import end_metric, panel_split, task_count, train_percent


def write_run(folder, name, end_task, value, method="muppet", tasks=(), fraction=1.0, test=True):
    folder.mkdir(parents=True)
    config = {"name": name, "method": method, "end_task": end_task, "data_dir": "/nowhere",
              "muppet": {"tasks": list(tasks)}, "data": {"train_fraction": fraction}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    figures = {"accuracy": value}
    # an end task without a test split: tartan writes "test": null
    (folder / "metrics.json").write_text(json.dumps({"metric": "accuracy", "dev": figures,
                                                     "test": figures if test else None}))
    return folder


def test_a_run_is_placed_by_its_task_count_or_train_share_and_scored_on_test_else_dev(tmp_path):
    with_test = write_run(tmp_path / "a", "muppet:two", "toy", 0.5, tasks=["x", "y"], fraction=0.25)
    without = write_run(tmp_path / "b", "finetune", "toy", 0.75, method="finetune", tasks=["x"], test=False)
    assert task_count(yaml.safe_load((with_test / "config.yaml").read_text())) == 2
    assert task_count(yaml.safe_load((without / "config.yaml").read_text())) == 0  # no pre-finetuning stage
    assert train_percent(yaml.safe_load((with_test / "config.yaml").read_text())) == 25.0
    assert panel_split([with_test]) == "test" and end_metric(with_test, "test") == ("accuracy", 50.0)
    # one run without a test split puts the whole panel on dev: no point averages test with dev
    assert panel_split([with_test, without]) == "dev" and end_metric(with_test, "dev") == ("accuracy", 50.0)


def drawn_lines(monkeypatch, kind, runs, tmp_path):
    """{legend label: [(x, y), ...]} of the one panel `tartan plot kind` draws."""
    import tartan.plots.against as against

    figures = []
    monkeypatch.setattr(against, "save", lambda figure, output: figures.append(figure) or output)
    assert main(["plot", kind, *map(str, runs), "-o", str(tmp_path / "p.png")]) == 0
    (ax,) = figures[0].axes
    handles, labels = ax.get_legend_handles_labels()
    return {label: [tuple(map(float, xy)) for xy in zip(*bars.lines[0].get_data())]
            for bars, label in zip(handles, labels)}, ax.get_ylabel()


def test_scale_draws_a_line_per_setting_and_a_panel_on_one_split(tmp_path, monkeypatch):
    runs = []
    for seed in range(2):
        for count in (1, 2):
            runs.append(write_run(tmp_path / f"plain{count}/{seed}", "muppet", "toy", 0.70, tasks=["t"] * count))
            folder = write_run(tmp_path / f"r3f{count}/{seed}", "muppet", "toy", 0.60, tasks=["t"] * count)
            config = yaml.safe_load((folder / "config.yaml").read_text())
            config["muppet"]["r3f"] = True
            (folder / "config.yaml").write_text(yaml.safe_dump(config))
            runs.append(folder)
    lines, ylabel = drawn_lines(monkeypatch, "scale", runs, tmp_path)
    assert sorted(lines.values()) == [[(1, 60.0), (2, 60.0)], [(1, 70.0), (2, 70.0)]]  # never one mean of 65
    assert ylabel == "test accuracy (x100)"
    write_run(tmp_path / "no_test", "muppet", "toy", 0.5, tasks=["t"], test=False)
    lines, ylabel = drawn_lines(monkeypatch, "scale", [*runs, tmp_path / "no_test"], tmp_path)
    assert ylabel == "dev accuracy (x100)"


def test_scale_and_low_resource_plots_write_a_panel_per_end_task(tmp_path):
    runs = []
    for end_task in ("toy", "other"):
        for seed in range(2):
            runs.append(write_run(tmp_path / f"{end_task}/ft{seed}", "finetune", end_task, 0.5 + seed / 10,
                                  method="finetune"))
            for count in (1, 2, 4):
                runs.append(write_run(tmp_path / f"{end_task}/m{count}/{seed}", f"muppet:{count}", end_task,
                                      0.6 + count / 100, tasks=["t"] * count))
    for kind in ("scale", "low_resource"):
        output = tmp_path / f"{kind}.png"
        assert main(["plot", kind, *map(str, runs), "-o", str(output)]) == 0
        assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and output.stat().st_size > 10_000


def test_a_damaged_metrics_file_or_an_unwritable_format_is_one_line_before_any_plot(tmp_path, capsys):
    run = write_run(tmp_path / "a", "muppet:two", "toy", 0.5, tasks=["x", "y"])
    (run / "metrics.json").write_text(json.dumps({"metric": "macro_f1", "test": {"accuracy": 0.6}}))
    for kind in ("scale", "low_resource"):
        assert main(["plot", kind, str(run), "-o", str(tmp_path / "p.png")]) == 2
        error = capsys.readouterr().err.strip()
        assert "a/metrics.json: test has no number for 'macro_f1'" in error and len(error.splitlines()) == 1
    assert main(["plot", "scale", str(run), "-o", str(tmp_path / "p.txt")]) == 2
    error = capsys.readouterr().err.strip()
    assert "p.txt: a plot's file must end in one of" in error and len(error.splitlines()) == 1
    assert not list(tmp_path.glob("p.*"))
