"""The dev-curve and data-efficiency plots on fixture run directories."""
from __future__ import annotations

import json

import pytest
import yaml

from tartan.cli import main
from tartan.plots.curves import read_dev_curve
from tartan.plots.efficiency import size_multiple


def write_run(folder, name, test, size=None, log=(), data_dir="/nowhere", end_task="toy"):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"name": name, "data_dir": str(data_dir), "end_task": end_task,
                                                        "domain": {"path": "d.txt", "size": size}}))
    (folder / "metrics.json").write_text(json.dumps({"metric": "macro_f1", "test": {"macro_f1": test}}))
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return folder


def evaluation(stage, epoch, value, metric="macro_f1"):
    return {"stage": stage, "step": int(10 * epoch), "epoch": epoch, "dev": {metric: value, "loss": 1.0}}


def test_dev_curve_skips_mlm_stages_and_continues_epochs_across_stages(tmp_path):
    log = [evaluation("tapt", 1.0, 5.0, metric="perplexity"), {"stage": "multitask", "step": 3, "loss": {"a": 1}},
           evaluation("multitask", 1.0, 0.5), evaluation("multitask", 2.0, 0.6),
           evaluation("final_finetune", 1.0, 0.65)]
    run = write_run(tmp_path / "r", "mt", 0.6, log=log)
    with open(run / "log.jsonl", "a") as out:
        out.write('{"stage": "final_fine')  # cut by a kill
    assert read_dev_curve(run) == ("macro_f1", {1.0: 50.0, 2.0: 60.0, 3.0: 65.0})


def test_dev_curve_of_an_accuracy_task_skips_the_masked_lm_accuracy(tmp_path):
    log = [{**evaluation("dapt", 1.0, 0.07, metric="accuracy"), "task": "dapt"},
           {**evaluation("finetune", 1.0, 0.8, metric="accuracy"), "task": "toy"}]
    run = write_run(tmp_path / "r", "dapt", 0.8, log=log)
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "metric": "accuracy", "end_task": "toy",
                                                  "test": {**metrics["test"], "accuracy": 0.8}}))
    assert read_dev_curve(run) == ("accuracy", {1.0: 80.0})  # epochs of the end task only


def test_curves_and_efficiency_plots_write_pngs(tmp_path, capsys):
    runs = []
    for name, base in (("dapt", 0.6), ("meta_tartan", 0.65)):
        for size in ("1x", "10x", "100x"):
            for seed in range(2):
                log = [evaluation("finetune", e, base + 0.01 * e + 0.01 * seed) for e in (1.0, 2.0, 3.0 - seed)]
                runs.append(write_run(tmp_path / f"{name}{size}{seed}", name, base + 0.01 * seed, size, log))
    for kind in ("curves", "efficiency"):
        output = tmp_path / f"{kind}.png"
        assert main(["plot", kind, *map(str, runs), "-o", str(output)]) == 0
        assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and output.stat().st_size > 10_000


def seed_labels(run_dirs, tmp_path, monkeypatch) -> list[str]:
    import tartan.plots.efficiency as efficiency

    drawn = []
    monkeypatch.setattr(efficiency, "save", lambda figure, output: drawn.append(figure) or output)
    efficiency.plot_efficiency(run_dirs, tmp_path / "e.png")
    labels = sorted(text.get_text() for ax in drawn[0].axes for text in ax.texts)
    efficiency.pyplot().close(drawn[0])
    return labels


def test_efficiency_says_how_many_seeds_only_when_points_differ(tmp_path, monkeypatch):
    runs = [write_run(tmp_path / f"d{size}{seed}", "dapt", 0.6, size) for size in ("1x", "10x") for seed in range(2)]
    assert seed_labels(runs, tmp_path, monkeypatch) == []
    runs.append(write_run(tmp_path / "m1x0", "mt_tartan", 0.62, "1x"))
    assert seed_labels(runs, tmp_path, monkeypatch) == ["n=1", "n=2", "n=2"]


def test_size_multiple_from_nx_or_a_line_count(tmp_path):
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "train.jsonl").write_text("".join(json.dumps({"text": f"t{i}", "label": "a"}) + "\n"
                                                          for i in range(40)))
    config = {"data_dir": str(tmp_path), "end_task": "toy", "domain": {"size": "10x"}}
    assert size_multiple(config, tmp_path) == 10
    config["domain"]["size"] = 400
    assert size_multiple(config, tmp_path) == 10


@pytest.mark.parametrize("size, message", [(None, "domain.size is not set"), (400, "train file is not found")])
def test_efficiency_bad_input_is_one_line(size, message, tmp_path, capsys):
    run = write_run(tmp_path / "r", "dapt", 0.6, size)
    assert main(["plot", "efficiency", str(run), "-o", str(tmp_path / "e.png")]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "e.png").exists()
