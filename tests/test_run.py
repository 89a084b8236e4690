"""End to end through the library and the CLI with tiny random models."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import AutoModel

from tartan.cli import main
from tartan.config import load_config
from tartan.errors import TartanError
from tartan.run import train
from tartan.rundir import existing_dir

from helpers import Interrupted, ScriptedDev, read_jsonl, recipe, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
def test_finetune_writes_the_run_directory_contract(kind, tiny_models, data_dir, tmp_path):
    run_dir = tmp_path / "run"
    metrics = train(load_config(recipe("finetune"), tiny_overrides(tiny_models[kind], data_dir, run_dir)))
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
    log = read_jsonl(run_dir / "log.jsonl")
    assert any("dev" in r for r in log) and any("loss" in r for r in log)


def test_model_learns_the_toy_task(tiny_models, data_dir, tmp_path):
    overrides = tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run", **{"train.epochs": 15, "train.patience": 0})
    metrics = train(load_config(recipe("finetune"), overrides))
    # the label is given by a marker word: a model that trains at all gets far above chance (1/3)
    assert metrics["dev"]["accuracy"] >= 0.8


def test_a_task_folder_named_as_the_runs_masked_lm_objective_is_refused(tiny_models, data_dir, tmp_path):
    # method=tapt end_task=tapt would fine-tune the masked-LM objective again and report its figures
    import shutil

    shutil.copytree(data_dir / "toy", data_dir / "tapt")
    with pytest.raises(TartanError, match="task 'tapt' would be both a mlm and a classification task"):
        train(load_config(recipe("tapt"), tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run",
                                                         end_task="tapt")))
    assert not (tmp_path / "run").exists()


def test_finished_run_is_not_retrained_and_force_retrains(tiny_models, data_dir, tmp_path, capsys):
    args = ["train", str(recipe("finetune"))] + tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run")
    assert main(args) == 0
    first = (tmp_path / "run" / "metrics.json").stat().st_mtime_ns
    assert main(args) == 0
    assert "finished already" in capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.json").stat().st_mtime_ns == first
    assert main(args + ["--force"]) == 0
    assert (tmp_path / "run" / "metrics.json").stat().st_mtime_ns != first


def test_a_moved_run_directory_is_trained_where_it_is_now(tiny_models, data_dir, tmp_path, capsys):
    args = ["train", str(recipe("finetune"))] + tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run")
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
    base = ["train", str(recipe("finetune"))] + tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run")
    assert main(base) == 0
    assert main(base + ["seed=5"]) == 2
    assert "differs in: seed" in capsys.readouterr().err


def test_a_run_finished_at_precision_auto_is_read_back_on_a_device_that_resolves_auto_otherwise(
        tiny_models, data_dir, tmp_path, capsys, monkeypatch):
    import tartan.training.device as device_module

    base = ["train", str(recipe("finetune"))] + tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run",
                                                                 **{"train.precision": "auto", "train.max_steps": 2})
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: True)  # where it trained: auto is bf16
    assert main(base) == 0
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["precision"] == "bf16"
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: False)  # a machine where auto is fp32
    capsys.readouterr()
    assert main(base) == 0 and main(["train", str(tmp_path / "run")]) == 0  # auto, and bf16 as saved
    err = capsys.readouterr().err
    assert err.count("finished already") == 2
    assert "no native bf16" not in err  # nothing trains, so nothing falls back
    assert main(base + ["train.precision=fp32"]) == 2  # asked for another precision: another run
    assert "differs in: train.precision);" in capsys.readouterr().err
    (tmp_path / "run" / "metrics.json").unlink()  # unfinished, it would go on training in fp32
    assert main(base) == 2
    assert "train.precision began as bf16, and here the request resolves to fp32" in capsys.readouterr().err


def test_bf16_asked_for_without_hardware_is_said_once_and_only_when_it_trains(
        tiny_models, data_dir, tmp_path, capsys, monkeypatch):
    import tartan.training.device as device_module

    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: False)
    base = ["train", str(recipe("finetune"))] + tiny_overrides(
        tiny_models["bert"], data_dir, tmp_path / "run",
        **{"train.precision": "bf16", "pretrain.precision": "bf16", "train.max_steps": 2})
    assert main(base) == 0
    assert capsys.readouterr().err.count("no native bf16 support; training in fp32") == 1
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["precision"] == "fp32"


def test_a_run_saved_before_a_config_key_existed_is_still_the_same_run(tiny_models, data_dir, tmp_path, capsys):
    base = ["train", str(recipe("finetune"))] + tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run")
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
    base = ["train", str(recipe("finetune"))] + tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run")
    assert main(base) == 0
    roundabout = f"data_dir={data_dir}/../{Path(data_dir).name}"
    assert main(base + [roundabout]) == 0
    assert "finished already" in capsys.readouterr().err


def test_eval_and_predict(tiny_models, data_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(load_config(recipe("finetune"), tiny_overrides(tiny_models["bert"], data_dir, run_dir)))
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
    rows = read_jsonl(out)
    assert len(rows) == 3 and all(r["label"] in {"Background", "Uses", "Extends"} for r in rows)
    assert all(0 < r["probability"] <= 1 for r in rows)


# the kill of the one test that needs a real process killed: a run that SIGKILLs itself while it
# swaps in its checkpoint of step 6, between `last` -> `last.old` and the new folder -> `last`, when
# the only complete copy is last.old (rundir.replace_dir)
KILLED_MID_SWAP = """
import json, os, signal, sys
from pathlib import Path

replace = os.replace

def replace_then_die(src, dst, **kwargs):
    replace(src, dst, **kwargs)
    dst = Path(dst)
    if dst.name == "last.old" and json.loads((dst / "state.json").read_text())["loop"]["step"] >= 5:
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace_then_die
from tartan.cli import main
sys.exit(main(["train", *sys.argv[1:]]))
"""


def _cli(args: list[str], code: str | None = None, **kwargs) -> subprocess.Popen:
    """`tartan train ARGS` in a process of its own (or `code` run with ARGS); the package is found
    on PYTHONPATH as set (a mutated copy, under mutation testing), else in this checkout. Pass a cwd
    without a tartan/ folder: `python -c` and `-m` put the working folder first on sys.path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])))
    command = ["-c", code] if code is not None else ["-m", "tartan", "train"]
    return subprocess.Popen([sys.executable, *command, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_a_run_killed_while_it_swaps_in_a_timed_checkpoint_resumes_to_the_same_result(tiny_models, data_dir,
                                                                                      tmp_path):
    # no evaluation before the end: only the timed checkpoints (here after every step) resume it
    extra = {"train.eval_every": 1000, "train.checkpoint_minutes": 0, "train.patience": 0}
    whole = train(load_config(recipe("finetune"), tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "whole",
                                                                 **extra)))

    killed_dir = tmp_path / "killed"
    overrides = tiny_overrides(tiny_models["bert"], data_dir, killed_dir, **extra)
    killed = _cli([str(recipe("finetune"))] + overrides, code=KILLED_MID_SWAP, cwd=tmp_path)
    _, stderr = killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL, stderr.decode()
    assert not (killed_dir / "metrics.json").exists()
    last = killed_dir / "checkpoint" / "finetune" / "last"
    assert not last.exists()  # killed mid-swap: the complete copy is last.old
    checkpoint = existing_dir(last)
    assert checkpoint is not None and json.loads((checkpoint / "state.json").read_text())["loop"]["step"] == 5
    assert not (checkpoint / "best.safetensors").exists()  # before any evaluation: no best weights yet

    resumed = train(load_config(recipe("finetune"), overrides))
    assert (resumed["dev"], resumed["test"], resumed["best_step"]) == (whole["dev"], whole["test"], whole["best_step"])
    on_disk = json.loads((killed_dir / "metrics.json").read_text())
    assert (on_disk["dev"], on_disk["test"]) == (whole["dev"], whole["test"])
    # what the killed run logged past its checkpoint (the loss of step 6) was dropped, then logged again
    log_steps = [r["step"] for r in read_jsonl(killed_dir / "log.jsonl") if "loss" in r]
    assert log_steps == [2, 4, 6, 8, 10, 12]


# 4 epochs of 6 steps, an evaluation every 3: 8 evaluations, interrupted before the 6th (at step 18),
# which resumes from the checkpoint of step 15 whose best is step 12 (0.5); after the resume 0.45 is
# no improvement on it and the best is step 21 (0.6): the result is the weights trained after the resume
CURVE = [0.1, 0.3, 0.2, 0.5, 0.4, 0.45, 0.6, 0.2]
INTERRUPTED_AT = 5


@pytest.mark.parametrize("name, stage", [("finetune", "finetune"), ("meta_tartan", "multitask")])
def test_an_interrupted_run_resumes_to_the_same_result(name, stage, tiny_models, data_dir, tmp_path, monkeypatch):
    extra = {"train.epochs": 4, "train.eval_every": 3, "train.patience": 0}
    if name == "meta_tartan":  # learned weights, MLM masks and meta heads resume exactly too
        extra.update({"domain.path": "toy_pairs/train.jsonl", "multitask.auxiliary_batch_size": 4,
                      "meta.dev_batch_size": 8})

    def run(folder: str) -> dict:
        return train(load_config(recipe(name), tiny_overrides(tiny_models["bert"], data_dir, tmp_path / folder,
                                                              **extra)))

    ScriptedDev({stage: CURVE}).install(monkeypatch)
    whole = run("whole")
    assert whole["best_step"] == 21

    ScriptedDev({stage: CURVE}, fail_at={stage: INTERRUPTED_AT}).install(monkeypatch)
    with pytest.raises(Interrupted):
        run("resumed")
    resumed_dir = tmp_path / "resumed"
    assert not (resumed_dir / "metrics.json").exists()
    state = json.loads((resumed_dir / "checkpoint" / stage / "last" / "state.json").read_text())
    assert state["loop"]["step"] == 3 * INTERRUPTED_AT and state["loop"]["best_step"] == 12
    # the resumed run's evaluations go on from where the interrupted one's stopped
    rest = ScriptedDev({stage: CURVE[INTERRUPTED_AT:]}).install(monkeypatch)
    resumed = run("resumed")
    assert rest.calls == {stage: len(CURVE) - INTERRUPTED_AT}

    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("whole", "resumed"))
    assert (a["dev"], a["test"], a["best_step"]) == (b["dev"], b["test"], b["best_step"])
    assert (resumed["dev"], resumed["test"]) == (whole["dev"], whole["test"])
    weights = [tmp_path / d / "task_weights.csv" for d in ("whole", "resumed")]
    assert [w.is_file() for w in weights] == [stage == "multitask"] * 2
    if stage == "multitask":
        assert weights[0].read_text() == weights[1].read_text()
    whole_log, log = (read_jsonl(tmp_path / d / "log.jsonl") for d in ("whole", "resumed"))
    evaluations = [(r["step"], r["best"]) for r in log if "dev" in r]
    assert evaluations == [(r["step"], r["best"]) for r in whole_log if "dev" in r]
    assert [step for step, best in evaluations if best] == [3, 6, 12, 21]
    # what the interrupted run logged past its checkpoint (the losses of steps 16 and 18) was dropped
    assert [r["step"] for r in log if "loss" in r] == [r["step"] for r in whole_log if "loss" in r]


def test_a_stage_key_changes_with_head_warm_up_and_not_with_its_default_or_the_train_fraction(tiny_models, data_dir,
                                                                                            tmp_path):
    from types import SimpleNamespace

    from tartan.methods import methods
    from tartan.run import stage_key, stage_settings

    def key(*extra):
        config = load_config(None, tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run") + ["method=tapt",
                                                                                                     *extra])
        stage = methods.get("tapt")(config)[0]
        return stage_key(config, stage, {name: SimpleNamespace(digest="d") for name, _, _ in stage.tasks}, ""), \
            stage_settings(config, stage)

    plain, settings = key()
    assert "head_warmup_steps" not in settings["section"]  # keys stored before it existed stay valid
    assert key("pretrain.head_warmup_steps=0")[0] == plain and key("data.train_fraction=0.5")[0] == plain
    assert key("pretrain.head_warmup_steps=5")[0] != plain
