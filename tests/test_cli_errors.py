"""The CLI's contract for bad input: one line on stderr naming the file (and line) and what is wrong,
exit code 2, no traceback unless --debug, and nothing written (the run directory never appears)."""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tartan.cli import main
from tartan.errors import TartanError

from helpers import RECIPES, read_jsonl, recipe, tiny_overrides, write_jsonl

ROOT = RECIPES.parent
RECIPE = recipe("finetune")


@pytest.fixture()
def bad_data(data_dir, tmp_path):
    """A copy of the toy task in its own data folder, to be corrupted by the test."""
    target = tmp_path / "bad_data"
    shutil.copytree(data_dir / "toy", target / "toy")
    return target


def run_train(capsys, model, data_dir, output_dir, *extra_args, recipe=RECIPE, **overrides):
    capsys.readouterr()  # only what the command prints, not the progress bars of a tiny model's first build
    code = main(["train", str(recipe), *tiny_overrides(model, data_dir, output_dir, **overrides), *extra_args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, output_dir: Path, *needles: str) -> str:
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    line = lines[0]
    assert line.startswith("tartan: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    assert not output_dir.exists(), "something was written for bad input"
    return line


def corrupt_train(bad_data: Path, edit) -> Path:
    path = bad_data / "toy" / "train.jsonl"
    write_jsonl(path, edit(read_jsonl(path)))
    return path


# (name, how to corrupt the copied toy task, what the one line must contain)
def _malformed_json(d):
    path = d / "toy" / "train.jsonl"
    lines = path.read_text().splitlines()
    lines[6] = '{"text": "broken", "label": '
    path.write_text("\n".join(lines) + "\n")
    return [f"{path}:7", "malformed JSON"]


def _missing_text(d):
    path = corrupt_train(d, lambda rows: rows[:2] + [{"label": "Uses"}] + rows[2:])
    return [f"{path}:3", "text"]


def _non_string_text(d):
    path = corrupt_train(d, lambda rows: rows[:9] + [{"text": 5, "label": "Uses"}] + rows[9:])
    return [f"{path}:10", "text", "int"]


def _missing_label(d):
    path = corrupt_train(d, lambda rows: rows[:4] + [{"text": "no label"}] + rows[4:])
    return [f"{path}:5", "label"]


def _unseen_dev_label(d):
    path = d / "toy" / "dev.jsonl"
    rows = read_jsonl(path)
    rows[11]["label"] = "Compare"
    write_jsonl(path, rows)
    return [f"{path}:12", "'Compare'"]


def _empty_file(d):
    path = d / "toy" / "dev.jsonl"
    path.write_text("")
    return [str(path), "empty"]


def _undecodable(d):
    path = d / "toy" / "train.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = b'{"text": "\xff\xfe", "label": "Uses"}\n'
    path.write_bytes(b"".join(lines))
    return [f"{path}:2", "UTF-8"]


def _blank_lines_counted(d):
    path = d / "toy" / "train.jsonl"
    rows = read_jsonl(path)
    write_jsonl(path, rows[:3] + ["", ""] + [{"text": "x"}] + rows[3:])
    return [f"{path}:6", "label"]


def _csv_wrong_field_count(d):
    (d / "toy" / "train.jsonl").unlink()
    path = d / "toy" / "train.csv"
    path.write_text('text,label\n"a, b",Uses\nc,Background\nd,Extends,extra\n')
    return [f"{path}:4", "fields"]


CORRUPTIONS = {"malformed_json": _malformed_json, "missing_text": _missing_text, "non_string_text": _non_string_text,
               "missing_label": _missing_label, "unseen_dev_label": _unseen_dev_label, "empty_file": _empty_file,
               "undecodable_bytes": _undecodable, "blank_lines_counted": _blank_lines_counted,
               "csv_wrong_field_count": _csv_wrong_field_count}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_bad_task_file_is_one_line_exit_2_and_nothing_written(corruption, bad_data, tiny_models, tmp_path, capsys):
    needles = CORRUPTIONS[corruption](bad_data)
    out_dir = tmp_path / "run"
    code, _, err = run_train(capsys, tiny_models["bert"], bad_data, out_dir)
    assert_one_line_error(code, err, out_dir, *needles)


def test_missing_task_folder(data_dir, tiny_models, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, _, err = run_train(capsys, tiny_models["bert"], data_dir, out_dir, end_task="citation_intent")
    line = assert_one_line_error(code, err, out_dir, str(data_dir / "citation_intent"), "not found")
    assert "toy, toy_pairs" in line


def test_missing_data_dir(tiny_models, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, _, err = run_train(capsys, tiny_models["bert"], tmp_path / "no_data", out_dir)
    assert_one_line_error(code, err, out_dir, str(tmp_path / "no_data"), "data directory not found")


def test_unknown_config_key_in_override(data_dir, tiny_models, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, _, err = run_train(capsys, tiny_models["bert"], data_dir, out_dir, **{"train.learning_rate": 1})
    assert_one_line_error(code, err, out_dir, "train.learning_rate=1", "unknown config key")


def test_a_key_given_twice_on_the_command_line_takes_its_last_value(data_dir, tiny_models, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, _, err = run_train(capsys, tiny_models["bert"], data_dir, out_dir, "seed=1", "seed=2")
    assert code == 0, err
    assert "seed: 2" in (out_dir / "config.yaml").read_text().splitlines()


def test_a_bad_domain_size_is_refused_when_read_whatever_the_method(data_dir, tiny_models, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, _, err = run_train(capsys, tiny_models["bert"], data_dir, out_dir, **{"domain.size": "3y"})
    assert_one_line_error(code, err, out_dir, "domain.size must be a line count", "'3y'")


def test_overrides_after_an_option_are_overrides(tmp_path, capsys):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"root: {tmp_path / 'root'}\nrecipes: [finetune]\nend_tasks: [toy]\nseeds: [0]\n"
                     "grid: {train.lr_body: [0.0001, 0.0002]}\n")
    assert main(["sweep", str(sweep), "--dry-run", "train.lr_body=3e-4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "train.lr_body is an axis of the sweep's grid" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit):  # not an override: argparse's usage error, as before
        main(["sweep", str(sweep), "--dry-run", "--no-such-flag"])


def test_unknown_config_key_in_recipe(data_dir, tiny_models, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("method: finetune\ntrain:\n  epochs: 2\n  learning_rate: 0.1\n")
    out_dir = tmp_path / "run"
    code, _, err = run_train(capsys, tiny_models["bert"], data_dir, out_dir, recipe=recipe)
    assert_one_line_error(code, err, out_dir, f"{recipe}:4", "train.learning_rate")


@pytest.mark.parametrize("key, value, expected", [("train.epochs", "ten", "integer"),
                                                  ("train.batch_size", "1.5", "integer"),
                                                  ("train.lr_body", "fast", "number")])
def test_wrong_value_type_in_override(key, value, expected, data_dir, tiny_models, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, _, err = run_train(capsys, tiny_models["bert"], data_dir, out_dir, **{key: value})
    assert_one_line_error(code, err, out_dir, f"{key}={value}", expected)


def test_wrong_value_type_in_recipe(data_dir, tiny_models, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("method: finetune\nseed: 0\ndata:\n  max_length: long\n")
    out_dir = tmp_path / "run"
    code, _, err = run_train(capsys, tiny_models["bert"], data_dir, out_dir, recipe=recipe)
    assert_one_line_error(code, err, out_dir, f"{recipe}:4", "data.max_length", "integer")


def test_malformed_recipe(data_dir, tiny_models, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("method: finetune\nseed: 1: 2\n")
    out_dir = tmp_path / "run"
    code, _, err = run_train(capsys, tiny_models["bert"], data_dir, out_dir, recipe=recipe)
    assert_one_line_error(code, err, out_dir, f"{recipe}:2", "YAML")


def test_missing_recipe_file(data_dir, tiny_models, tmp_path, capsys):
    recipe = tmp_path / "no_such_recipe.yaml"
    out_dir = tmp_path / "run"
    code, _, err = run_train(capsys, tiny_models["bert"], data_dir, out_dir, recipe=recipe)
    assert_one_line_error(code, err, out_dir, str(recipe), "not found")


def test_model_path_that_does_not_exist(data_dir, tmp_path, capsys):
    model = tmp_path / "no_such_model"
    out_dir = tmp_path / "run"
    code, _, err = run_train(capsys, model, data_dir, out_dir)
    assert_one_line_error(code, err, out_dir, str(model))


def test_model_folder_without_config(data_dir, tmp_path, capsys):
    model = tmp_path / "empty_model"
    model.mkdir()
    out_dir = tmp_path / "run"
    code, _, err = run_train(capsys, model, data_dir, out_dir)
    assert_one_line_error(code, err, out_dir, str(model), "config.json")


def test_error_with_a_relative_output_dir_writes_nothing(bad_data, tiny_models, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _missing_label(bad_data)
    code = main(["train", str(RECIPE), *tiny_overrides(tiny_models["bert"], bad_data, Path("runs/x"))])
    assert_one_line_error(code, capsys.readouterr().err, tmp_path / "runs", "label")


def test_debug_reraises(bad_data, tiny_models, tmp_path):
    _missing_text(bad_data)
    with pytest.raises(TartanError) as caught:
        main(["--debug", "train", str(RECIPE), *tiny_overrides(tiny_models["bert"], bad_data, tmp_path / "run")])
    assert caught.value.line == 3 and caught.value.path.endswith("train.jsonl")
    assert not (tmp_path / "run").exists()


def test_debug_reraises_config_errors(tmp_path):
    with pytest.raises(TartanError):
        main(["--debug", "train", str(tmp_path / "absent.yaml")])


@pytest.mark.parametrize("command", ["train", "eval", "predict", "export", "download", "plot", "sweep", "report"])
def test_every_command_takes_debug_after_its_name(command, capsys):
    """`tartan CMD ... --debug` as well as `tartan --debug CMD ...`: an unknown flag would be a usage error."""
    from tartan.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    assert "--debug" in sub._option_string_actions


@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["predict"], ["download"]])
def test_help_exits_0(command, capsys):
    with pytest.raises(SystemExit) as caught:
        main([*command, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tartan") and "--help" in out


def test_python_m_tartan_help():
    result = subprocess.run([sys.executable, "-m", "tartan", "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert re.search(r"\btrain\b", result.stdout) and "predict" in result.stdout


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["frobnicate"])
    assert caught.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# --- eval and predict on a finished run (built from the tiny model without training) ----------------------

@pytest.fixture()
def finished_run(tiny_models, data_dir, tmp_path):
    from tartan.config import load_config, save_config
    from tartan.models.heads import ClassificationHead, save_head
    from tartan.run import resolve

    run_dir = tmp_path / "finished"
    shutil.copytree(tiny_models["bert"], run_dir / "model")
    config = resolve(load_config(RECIPE, tiny_overrides(tiny_models["bert"], data_dir, run_dir)))
    (run_dir / "config.yaml").write_text(save_config(config))
    save_head(ClassificationHead(32, 3, 0.1), run_dir / "heads", "toy",
              {"type": "classification", "labels": ["Background", "Extends", "Uses"], "dropout": 0.1})
    return run_dir


def predict(capsys, run_dir: Path, inputs: Path, output: Path):
    code = main(["predict", str(run_dir), str(inputs), "--output", str(output)])
    return code, capsys.readouterr().err


def test_predict_writes_one_line_per_row(finished_run, tmp_path, capsys):
    inputs = tmp_path / "inputs.jsonl"
    write_jsonl(inputs, [{"text": "zeta the model"}, "", {"text": "kappa uses"}])
    code, err = predict(capsys, finished_run, inputs, tmp_path / "out.jsonl")
    assert code == 0, err
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 2
    # the blank line shifts every later row's output line: said, as for a .txt
    assert f"warning: {inputs}: skipped 1 blank line(s) (line 2)" in err


@pytest.mark.parametrize("name, content, needles", [
    ("inputs.jsonl", '{"text": "a"}\n{"label": "x"}\n', [":2", "text"]),
    ("inputs.jsonl", '{"text": "a"}\n{"text": 5}\n', [":2", "text"]),
    ("inputs.jsonl", '{"text": "a"}\n{"text": \n', [":2", "malformed JSON"]),
    ("inputs.txt", "", ["empty"]),
    ("inputs.csv", "text\n\"a, b\"\nc,d\n", [":3", "fields"]),
])
def test_predict_bad_input_file(name, content, needles, finished_run, tmp_path, capsys):
    inputs = tmp_path / name
    inputs.write_text(content)
    output = tmp_path / "out.jsonl"
    code, err = predict(capsys, finished_run, inputs, output)
    assert_one_line_error(code, err, output, str(inputs), *needles)


def test_predict_missing_input_file(finished_run, tmp_path, capsys):
    output = tmp_path / "out.jsonl"
    code, err = predict(capsys, finished_run, tmp_path / "absent.jsonl", output)
    assert_one_line_error(code, err, output, str(tmp_path / "absent.jsonl"), "not found")


def test_predict_non_string_text_pair(finished_run, tmp_path, capsys):
    inputs = tmp_path / "inputs.jsonl"
    write_jsonl(inputs, [{"text": "a", "text_pair": "b"}, {"text": "c", "text_pair": 5}])
    output = tmp_path / "out.jsonl"
    code, err = predict(capsys, finished_run, inputs, output)
    assert_one_line_error(code, err, output, f"{inputs}:2", "text_pair")


def test_predict_unsupported_extension_names_the_file(finished_run, tmp_path, capsys):
    inputs = tmp_path / "inputs.json"
    inputs.write_text('{"text": "a"}\n')
    output = tmp_path / "out.jsonl"
    code, err = predict(capsys, finished_run, inputs, output)
    assert_one_line_error(code, err, output, str(inputs))


def test_eval_with_a_missing_data_dir(finished_run, tmp_path, capsys):
    code = main(["eval", str(finished_run), "--split", "dev", "--data-dir", str(tmp_path / "gone")])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("tartan: error: ")
    assert str(tmp_path / "gone") in lines[0]


def test_eval_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "not_a_run").mkdir()
    code = main(["eval", str(tmp_path / "not_a_run")])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and str(tmp_path / "not_a_run") in lines[0]


def test_eval_of_an_unfinished_run(finished_run, capsys):
    shutil.rmtree(finished_run / "heads")
    code = main(["eval", str(finished_run)])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and "has not finished" in lines[0]


def test_max_length_beyond_the_model_is_one_line_and_nothing_written(tiny_models, data_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run_train(capsys, tiny_models["bert"], data_dir, run_dir, **{"data.max_length": 4096})
    assert_one_line_error(code, err, run_dir, "longer than model")


def test_a_cache_folder_that_cannot_be_made_is_one_line_and_nothing_written(tiny_models, data_dir, tmp_path,
                                                                            monkeypatch, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setenv("TARTAN_CACHE", str(tmp_path / "a_file" / "tartan"))
    run_dir = tmp_path / "run"
    code, _, err = run_train(capsys, tiny_models["bert"], data_dir, run_dir)
    assert_one_line_error(code, err, run_dir, "the cache folder (TARTAN_CACHE) cannot be made")
