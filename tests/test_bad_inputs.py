"""One case per class of bad input a user can give tartan (issue 27): each is one line on stderr
naming what is wrong (and the file, and the line where there is one), exit code 2, no traceback, and
nothing written. The classes of test_cli_errors.py (bad task files, bad recipes) are not repeated."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tartan.cli import main

from helpers import read_jsonl, recipe, tiny_overrides, write_jsonl

RECIPE = recipe("finetune")


def assert_one_line(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tartan: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    print(lines[0])  # pytest -s: the message each class gives
    return lines[0]


def train(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["train", *args])
    return code, capsys.readouterr().err


@pytest.fixture()
def own_data(data_dir, tmp_path) -> Path:
    target = tmp_path / "own_data"
    shutil.copytree(data_dir / "toy", target / "toy")
    return target


@pytest.fixture()
def finished_run(tiny_models, data_dir, tmp_path) -> Path:
    run_dir = tmp_path / "finished"
    assert main(["train", str(RECIPE), *tiny_overrides(tiny_models["bert"], data_dir, run_dir,
                                                       **{"train.max_steps": 2})]) == 0
    return run_dir


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run_dir, target)
    return target


# ---- where tartan writes

def test_an_output_dir_that_is_a_file(capsys, tiny_models, data_dir, tmp_path):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    code, err = train(capsys, str(RECIPE), *tiny_overrides(tiny_models["bert"], data_dir, out))
    assert_one_line(code, err, str(out), "is a file, not a folder")
    assert out.read_text() == "not a folder"


def test_an_output_dir_that_cannot_be_made(capsys, tiny_models, data_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "runs" / "run"
    code, err = train(capsys, str(RECIPE), *tiny_overrides(tiny_models["bert"], data_dir, out))
    assert_one_line(code, err, str(out), "cannot be made", "is a file")


# ---- a model folder

@pytest.mark.parametrize("damage, needle", [
    (lambda folder: (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:300]),
     "cannot load model"),
    (lambda folder: (folder / "config.json").write_text(
        json.dumps({**json.loads((folder / "config.json").read_text()), "hidden_size": "wide"})),
     "cannot load model"),
])
def test_a_damaged_model_folder(damage, needle, capsys, tiny_models, data_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_models["bert"], model)
    damage(model)
    out = tmp_path / "run"
    code, err = train(capsys, str(RECIPE), *tiny_overrides(model, data_dir, out))
    assert_one_line(code, err, str(model), needle)
    assert not out.exists()


# ---- a finished run read back

@pytest.mark.parametrize("damage, needle", [
    (lambda run: (run / "heads" / "toy.safetensors").write_bytes((run / "heads" / "toy.safetensors").read_bytes()[:50]),
     "toy.safetensors"),
    (lambda run: (run / "heads" / "toy.json").write_text('{"labels": ["a", '), "toy.json:1"),
    (lambda run: (run / "heads" / "toy.json").write_text('{"labels": "abc"}'), "labels"),
])
def test_predict_with_a_damaged_head(damage, needle, capsys, finished_run, tmp_path):
    run = copy_of(finished_run, tmp_path)
    damage(run)
    inputs = tmp_path / "in.jsonl"
    write_jsonl(inputs, [{"text": "zeta the model"}])
    out = tmp_path / "predictions.jsonl"
    capsys.readouterr()
    code = main(["predict", str(run), str(inputs), "-o", str(out)])
    assert_one_line(code, capsys.readouterr().err, needle)
    assert not out.exists()


def test_report_over_metrics_with_a_value_of_the_wrong_type(capsys, finished_run, tmp_path):
    root = tmp_path / "runs"
    run = root / "finetune" / "toy" / "seed0"
    shutil.copytree(finished_run, run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["test"] = "high"
    (run / "metrics.json").write_text(json.dumps(metrics))
    capsys.readouterr()
    code = main(["report", str(root), "-o", str(tmp_path / "report")])
    assert_one_line(code, capsys.readouterr().err, "metrics.json")
    assert not (tmp_path / "report").exists()


def test_a_sweep_file_with_a_section_of_the_wrong_shape(capsys, tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("recipes: [finetune]\nend_tasks: [toy]\nseeds: [0]\noverrides: [1, 2]\n")
    capsys.readouterr()
    code = main(["sweep", str(sweep)])
    assert_one_line(code, capsys.readouterr().err, "sweep.yaml", "overrides")


# ---- data that would make results meaningless

@pytest.mark.parametrize("edit, needles", [
    (lambda rows: [{**r, "label": "only"} for r in rows], ("train.jsonl", "at least two different labels")),
    (lambda rows: [{**r, "text": "   "} for r in rows], ("train.jsonl", "every row has an empty text")),
])
def test_training_data_that_cannot_mean_anything(edit, needles, capsys, tiny_models, own_data, tmp_path):
    path = own_data / "toy" / "train.jsonl"
    write_jsonl(path, edit(read_jsonl(path)))
    out = tmp_path / "run"
    code, err = train(capsys, str(RECIPE), *tiny_overrides(tiny_models["bert"], own_data, out))
    assert_one_line(code, err, *needles)
    assert not out.exists()


def test_a_pair_field_in_train_but_not_in_dev(capsys, tiny_models, own_data, tmp_path):
    path = own_data / "toy" / "train.jsonl"
    write_jsonl(path, [{**r, "text_pair": "and a second text"} for r in read_jsonl(path)])
    out = tmp_path / "run"
    code, err = train(capsys, str(RECIPE), *tiny_overrides(tiny_models["bert"], own_data, out))
    assert_one_line(code, err, "dev.jsonl", "text_pair", "same fields")
    assert not out.exists()


def test_an_end_task_given_as_a_path(capsys, tiny_models, data_dir, tmp_path):
    out = tmp_path / "run"
    overrides = tiny_overrides(tiny_models["bert"], data_dir, out)
    overrides = [o for o in overrides if not o.startswith(("end_task=", "output_dir="))]
    code, err = train(capsys, str(RECIPE), *overrides, f"end_task={data_dir / 'toy'}")
    assert_one_line(code, err, "not a folder name")
    # the run directory it would have named: inside the data folder
    assert not (data_dir / "toy" / "seed0").exists()


# ---- recipes and overrides

def test_a_recipe_with_the_same_key_twice(capsys, tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("method: finetune\ntrain:\n  lr_body: 1.0e-4\nend_task: toy\ntrain:\n  epochs: 3\n")
    code, err = train(capsys, str(path))
    assert_one_line(code, err, f"{path}:5", "'train' appears twice", "line 2")


@pytest.mark.parametrize("override, needles", [
    ("multitask.weights={tapt:1,dapt:2}", ("'tapt:1'", "space after the colon")),
    ("train.max_steps=", ("no value",)),
    ("data.max_length=1", ("data.max_length",)),
])
def test_override_values_that_cannot_be_right(override, needles, capsys, tiny_models, data_dir, tmp_path):
    out = tmp_path / "run"
    code, err = train(capsys, str(recipe("mt_tartan")), *tiny_overrides(tiny_models["bert"], data_dir, out),
                      "multitask.auxiliary=tapt", override)
    assert_one_line(code, err, *needles)
    assert not out.exists()


# ---- what tartan writes

def test_files_get_the_permissions_the_umask_gives(finished_run):
    for path in [finished_run / "metrics.json", finished_run / "config.yaml", finished_run / "log.jsonl",
                 finished_run / "heads" / "toy.json", *(finished_run / "model").glob("*.safetensors")]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~_umask(), path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_damaged_checkpoint_is_one_line_on_resume(capsys, tiny_models, data_dir, tmp_path, monkeypatch):
    import tartan.run
    from tartan.config import load_config

    class Killed(Exception):
        pass

    def killed(*args, **kwargs):
        raise Killed()

    out = tmp_path / "run"
    overrides = tiny_overrides(tiny_models["bert"], data_dir, out, **{"train.max_steps": 2})
    monkeypatch.setattr(tartan.run, "_save_model", killed)  # dies after its stage, the checkpoint left
    with pytest.raises(Killed):
        tartan.run.train(load_config(RECIPE, overrides))
    monkeypatch.undo()
    state = out / "checkpoint" / "finetune" / "last" / "state.json"
    state.write_text(state.read_text()[:20])
    code, err = train(capsys, str(RECIPE), *overrides)
    assert_one_line(code, err, str(state), "malformed checkpoint state", "delete")
    assert not (out / "metrics.json").exists()


def test_a_failed_checkpoint_write_leaves_the_previous_checkpoint_and_no_temporary_folder(tmp_path, monkeypatch):
    import torch

    from tartan.training import checkpoint

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    folder = tmp_path / "stage" / "last"
    checkpoint.save_checkpoint(folder, model, optimizer, scheduler, {"loop": {"step": 1}}, best_is_current=True)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    saves = []

    def disk_full_on_the_second(obj, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:
            raise OSError(28, "No space left on device")
        return torch_save(obj, path, *args, **kwargs)

    torch_save = torch.save
    monkeypatch.setattr(checkpoint.torch, "save", disk_full_on_the_second)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(OSError):
        checkpoint.save_checkpoint(folder, model, optimizer, scheduler, {"loop": {"step": 2}}, best_is_current=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["last"]


def test_predictions_to_a_path_inside_a_file(capsys, finished_run, tmp_path):
    inputs = tmp_path / "in.jsonl"
    write_jsonl(inputs, [{"text": "zeta the model"}])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    capsys.readouterr()
    code = main(["predict", str(finished_run), str(inputs), "-o", str(blocker / "predictions.jsonl")])
    assert_one_line(code, capsys.readouterr().err, str(blocker), "is a file, not a folder")
    assert blocker.read_text() == "x"
