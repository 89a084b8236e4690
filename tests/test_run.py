"""End to end through the library and the CLI with tiny random models."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from transformers import AutoModel

from tartan.cli import main
from tartan.config import load_config
from tartan.run import train
from tartan.rundir import existing_dir

from conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
def test_finetune_writes_the_run_directory_contract(kind, tiny_models, data_dir, tmp_path):
    run_dir = tmp_path / "run"
    metrics = train(load_config(ROOT / "recipes" / "finetune.yaml", tiny_overrides(tiny_models[kind], data_dir, run_dir)))
    assert metrics["name"] == "finetune" and metrics["method"] == "finetune" and metrics["end_task"] == "toy"
    for split in ("dev", "test"):
        assert set(metrics[split]) == {"macro_f1", "micro_f1", "accuracy", "loss"}
        assert all(0 <= metrics[split][k] <= 1 for k in ("macro_f1", "micro_f1", "accuracy"))
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["dev"] == metrics["dev"] and on_disk["best_step"] >= 1
    import tartan

    assert on_disk["code"]["tartan"] == tartan.__version__  # which code trained it (and its commit, in a checkout)
    assert set(on_disk["code"]) in ({"tartan"}, {"tartan", "commit", "modified"})
    assert (run_dir / "config.yaml").is_file() and (run_dir / "heads" / "toy.safetensors").is_file()
    assert not (run_dir / "checkpoint").exists()  # removable once the run is finished
    body = AutoModel.from_pretrained(run_dir / "model")
    assert body.config.hidden_size == 32
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert any("dev" in r for r in log) and any("loss" in r for r in log)


def test_model_learns_the_toy_task(tiny_models, data_dir, tmp_path):
    overrides = tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run", **{"train.epochs": 15, "train.patience": 0})
    metrics = train(load_config(ROOT / "recipes" / "finetune.yaml", overrides))
    # the label is given by a marker word: a model that trains at all gets far above chance (1/3)
    assert metrics["dev"]["accuracy"] >= 0.8


def test_finished_run_is_not_retrained_and_force_retrains(tiny_models, data_dir, tmp_path, capsys):
    args = ["train", str(ROOT / "recipes" / "finetune.yaml")] + tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run")
    assert main(args) == 0
    first = (tmp_path / "run" / "metrics.json").stat().st_mtime_ns
    assert main(args) == 0
    assert "finished already" in capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.json").stat().st_mtime_ns == first
    assert main(args + ["--force"]) == 0
    assert (tmp_path / "run" / "metrics.json").stat().st_mtime_ns != first


def test_a_moved_run_directory_is_trained_where_it_is_now(tiny_models, data_dir, tmp_path, capsys):
    args = ["train", str(ROOT / "recipes" / "finetune.yaml")] + tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run")
    assert main(args) == 0
    moved = tmp_path / "moved"
    (tmp_path / "run").rename(moved)
    assert main(["train", str(moved)]) == 0
    assert "finished already" in capsys.readouterr().err
    (moved / "metrics.json").unlink()  # as if killed before it finished
    assert main(["train", str(moved)]) == 0
    assert f"run directory: {moved}" in capsys.readouterr().out
    assert (moved / "metrics.json").is_file() and not (tmp_path / "run").exists()


def test_another_config_in_the_same_run_directory_is_refused(tiny_models, data_dir, tmp_path, capsys):
    base = ["train", str(ROOT / "recipes" / "finetune.yaml")] + tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run")
    assert main(base) == 0
    assert main(base + ["seed=5"]) == 2
    assert "differs in: seed" in capsys.readouterr().err


def test_a_run_saved_before_a_config_key_existed_is_still_the_same_run(tiny_models, data_dir, tmp_path, capsys):
    base = ["train", str(ROOT / "recipes" / "finetune.yaml")] + tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run")
    assert main(base) == 0
    saved = tmp_path / "run" / "config.yaml"
    older = yaml.safe_load(saved.read_text())
    del older["muppet"], older["model_config"]  # as a run from before these keys were added
    saved.write_text(yaml.safe_dump(older))
    assert main(base) == 0
    assert "finished already" in capsys.readouterr().err
    assert main(base + ["model_config={attention_probs_dropout_prob: 0}"]) == 2  # set, it decides the run
    assert "differs in: model_config.attention_probs_dropout_prob" in capsys.readouterr().err


def test_the_same_data_dir_spelled_another_way_is_the_same_run(tiny_models, data_dir, tmp_path, capsys):
    base = ["train", str(ROOT / "recipes" / "finetune.yaml")] + tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run")
    assert main(base) == 0
    roundabout = f"data_dir={data_dir}/../{Path(data_dir).name}"
    assert main(base + [roundabout]) == 0
    assert "finished already" in capsys.readouterr().err


def test_eval_and_predict(tiny_models, data_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(load_config(ROOT / "recipes" / "finetune.yaml", tiny_overrides(tiny_models["bert"], data_dir, run_dir)))
    assert main(["eval", str(run_dir), "--split", "dev"]) == 0
    expected = json.loads((run_dir / "metrics.json").read_text())["dev"]
    assert f"{100 * expected['macro_f1']:.2f}" in capsys.readouterr().out
    renamed = tmp_path / "renamed" / "toy"  # the same data with one label renamed: not the head's classes
    renamed.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (renamed / f"{split}.jsonl").write_text((data_dir / "toy" / f"{split}.jsonl").read_text().replace('"Uses"', '"Usage"'))
    assert main(["eval", str(run_dir), "--split", "dev", "--data-dir", str(renamed.parent)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "not the labels the run's head was trained on" in error
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("background the model\nuses text\n\nextends words\n")
    out = tmp_path / "predictions.jsonl"
    assert main(["predict", str(run_dir), str(inputs), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(r["label"] in {"Background", "Uses", "Extends"} for r in rows)
    assert all(0 < r["probability"] <= 1 for r in rows)


def _cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "tartan", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@pytest.mark.parametrize("recipe, stage, timed", [("finetune", "finetune", False), ("meta_tartan", "multitask", False),
                                                  ("finetune", "finetune", True)])
def test_killed_run_resumes_to_the_same_result(recipe, stage, timed, tiny_models, data_dir, tmp_path):
    extra = {"train.epochs": 12, "train.eval_every": 3, "train.patience": 0}
    if timed:  # no evaluation before the end: only the timed checkpoints (here after every step) resume it
        extra.update({"train.eval_every": 1000, "train.checkpoint_minutes": 0})
    if recipe == "meta_tartan":  # learned weights, MLM masks and meta heads resume exactly too
        extra.update({"train.epochs": 4, "domain.path": "toy_pairs/train.jsonl", "multitask.auxiliary_batch_size": 4,
                      "meta.dev_batch_size": 8})
    recipe = str(ROOT / "recipes" / f"{recipe}.yaml")
    whole = _cli([recipe] + tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "whole", **extra))
    assert whole.wait(timeout=300) == 0, whole.stderr.read().decode()

    killed_dir = tmp_path / "killed"
    killed = _cli([recipe] + tiny_overrides(tiny_models["bert"], data_dir, killed_dir, **extra))
    state = killed_dir / "checkpoint" / stage / "last" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and killed.poll() is None:
        if state.is_file() and json.loads(state.read_text())["loop"]["step"] >= 6:
            killed.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert killed.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed_dir / "metrics.json").exists()
    if timed:  # killed before any evaluation: it resumes from a checkpoint that holds no best weights yet
        # the kill may land while last/ is being swapped, when the complete copy is last.old/
        checkpoint = existing_dir(state.parent)
        assert checkpoint is not None and (checkpoint / "state.json").is_file()
        assert not (checkpoint / "best.safetensors").exists()

    resumed = _cli([recipe] + tiny_overrides(tiny_models["bert"], data_dir, killed_dir, **extra))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((killed_dir / "metrics.json").read_text())
    assert (a["dev"], a["test"], a["best_step"]) == (b["dev"], b["test"], b["best_step"])
    weights = [d / "task_weights.csv" for d in (tmp_path / "whole", killed_dir)]
    assert [w.is_file() for w in weights] == [stage == "multitask"] * 2
    if stage == "multitask":
        assert weights[0].read_text() == weights[1].read_text()
    log_steps = [r["step"] for r in map(json.loads, (killed_dir / "log.jsonl").read_text().splitlines()) if "dev" in r]
    assert log_steps == sorted(set(log_steps))  # what the killed run logged past its checkpoint was dropped
