"""tartan.errors: TartanError says where (file, and line) and what, in one line, as the CLI prints it."""
from __future__ import annotations

from pathlib import Path

import pytest

from tartan.cli import main
from tartan.errors import TartanError, first_line


def test_the_message_names_the_file_and_line():
    error = TartanError("missing field 'text'", Path("/data/toy/train.jsonl"), 7)
    assert str(error) == "/data/toy/train.jsonl:7: missing field 'text'"
    assert (error.message, error.path, error.line) == ("missing field 'text'", "/data/toy/train.jsonl", 7)
    assert error.args == (str(error),)  # what a traceback or a log shows


def test_without_a_line_or_a_path():
    assert str(TartanError("no train file", "/data/toy")) == "/data/toy: no train file"
    assert str(TartanError("train.batch_size must be positive")) == "train.batch_size must be positive"
    assert str(TartanError("bad", None, 3)) == "bad"  # a line means nothing without its file


def test_first_line_of_a_long_message():
    assert first_line(OSError("can't load\nTraceback ...\n  more")) == "can't load"
    assert first_line(ValueError("\n  indented first\nsecond")) == "indented first"
    assert first_line(KeyError()) == "KeyError"  # an empty message: the type says what happened


def test_the_cli_prints_it_as_one_line_and_exits_2(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("method: finetune\n# a comment\ntrain:\n  epochs: 3\n  learning_rate: 1\n")
    assert main(["train", str(recipe), f"output_dir={tmp_path / 'run'}"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"tartan: error: {recipe}:5: ") and err.count("\n") == 1
    assert "learning_rate" in err and not (tmp_path / "run").exists()
    with pytest.raises(TartanError) as caught:  # --debug: the error itself, with its traceback
        main(["train", str(recipe), "--debug"])
    assert (caught.value.path, caught.value.line) == (str(recipe), 5)
    assert err == f"tartan: error: {caught.value}\n"
