"""tartan.rundir: atomic writes, the folder swap that always leaves a complete copy, log.jsonl, and
the one-line errors of reading a run's metrics.json and config.yaml."""
from __future__ import annotations

import json
import os
import stat

import pytest

from tartan.errors import TartanError
from tartan.rundir import (RunLog, defining, existing_dir, read_config, read_metrics, replace_dir, write_json_atomic,
                           write_text_atomic)


# ---- atomic writes ------------------------------------------------------------------------------------

def test_an_atomic_write_leaves_the_file_and_nothing_else(tmp_path):
    path = tmp_path / "new" / "folder" / "notes.txt"  # its folders are made
    write_text_atomic(path, "first\n")
    assert path.read_text() == "first\n"
    write_text_atomic(path, "second, ü\n")  # replaced whole, in UTF-8
    assert path.read_bytes() == "second, ü\n".encode("utf-8")
    assert os.listdir(path.parent) == ["notes.txt"]  # no temporary file left beside it


def test_an_atomic_json_write_reads_back(tmp_path):
    value = {"dev": {"macro_f1": 0.5}, "steps": [1, 2], "name": "x"}
    write_json_atomic(tmp_path / "metrics.json", value)
    text = (tmp_path / "metrics.json").read_text()
    assert json.loads(text) == value and text.endswith("\n")
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_a_write_that_fails_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"old": 1})

    def failing_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(TartanError, match="cannot write: disk gone"):  # the machine's trouble: one line
        write_json_atomic(path, {"new": 2})
    assert json.loads(path.read_text()) == {"old": 1}
    assert os.listdir(tmp_path) == ["metrics.json"]  # no temporary file left behind


def test_an_atomically_written_file_is_as_readable_as_a_plainly_written_one(tmp_path):
    previous = os.umask(0o022)
    try:
        (tmp_path / "plain.txt").write_text("x")
        write_text_atomic(tmp_path / "atomic.txt", "x")
    finally:
        os.umask(previous)
    modes = [stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("plain.txt", "atomic.txt")]
    assert modes[1] == modes[0] == 0o644


# ---- folders swapped in whole ---------------------------------------------------------------------------

def folder_with(path, text: str):
    path.mkdir(parents=True)
    (path / "state.json").write_text(text)
    return path


def test_replace_dir_puts_the_new_folder_in_place_and_drops_the_old_copy(tmp_path):
    final = tmp_path / "last"
    replace_dir(folder_with(tmp_path / ".tmp1", "1"), final)  # nothing there before
    assert (final / "state.json").read_text() == "1" and not (tmp_path / ".tmp1").exists()
    replace_dir(folder_with(tmp_path / ".tmp2", "2"), final)
    assert (final / "state.json").read_text() == "2"
    assert sorted(os.listdir(tmp_path)) == ["last"]  # no last.old, no temporary folder


def test_the_complete_copy_is_last_old_when_a_swap_was_cut_short(tmp_path):
    final, old = tmp_path / "last", tmp_path / "last.old"
    assert existing_dir(final) is None
    folder_with(old, "1")  # killed between moving last aside and moving the new folder in
    assert existing_dir(final) == old
    replace_dir(folder_with(tmp_path / ".tmp", "2"), final)  # the next swap finishes cleanly
    assert existing_dir(final) == final and (final / "state.json").read_text() == "2" and not old.exists()
    folder_with(old, "stale")  # both there (killed before the old copy was removed): the new one counts
    assert existing_dir(final) == final


def test_defining_is_the_flat_config_without_display_settings():
    config = {"seed": 1, "trust_remote_code": True,
              "train": {"lr_body": 1e-4, "progress": False, "log_every": 10, "checkpoint_minutes": 5},
              "meta": {"lr": 0.01, "nested": {"x": 1}}}
    assert defining(config) == {"seed": 1, "train.lr_body": 1e-4, "meta.lr": 0.01, "meta.nested.x": 1}


# ---- log.jsonl ----------------------------------------------------------------------------------------------

def test_run_log_appends_records_and_reads_them_back(tmp_path):
    log = RunLog(tmp_path)
    assert log.records() == []  # no file yet
    records = [{"stage": "a", "step": 1, "loss": {"toy": 0.5}}, {"stage": "a", "step": 2, "dev": {"x": 1.0}}]
    for record in records:
        log.write(record)
    assert log.records() == records
    assert [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()] == records


def test_a_disabled_run_log_writes_nothing(tmp_path):
    log = RunLog(tmp_path, enabled=False)  # another process than the main one
    log.write({"step": 1})
    log.drop_after("a", 0)
    assert not (tmp_path / "log.jsonl").exists()


def test_a_line_torn_by_a_kill_is_skipped(tmp_path):
    (tmp_path / "log.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert RunLog(tmp_path).records() == [{"step": 1}, {"step": 2}]


def test_drop_after_forgets_what_the_stage_logged_past_its_checkpoint(tmp_path):
    log = RunLog(tmp_path)
    records = [{"stage": "pre", "step": 6, "loss": 1}, {"stage": "a", "step": 2, "loss": 1},
               {"stage": "a", "step": 4, "dev": 1}, {"stage": "a", "step": 6, "loss": 1},
               {"stage": "b", "step": 8, "loss": 1}, {"stage": "a", "reused": "/store"},
               {"stage": "b", "reused": "/store"}]
    for record in records:
        log.write(record)
    log.drop_after("a", 4)
    assert log.records() == [records[0], records[1], records[2], records[4], records[6]]
    log.drop_after("a", -1)  # a stage started over: nothing of it stays
    assert log.records() == [records[0], records[4], records[6]]
    assert os.listdir(tmp_path) == ["log.jsonl"]


def test_drop_after_without_a_log_makes_none(tmp_path):
    RunLog(tmp_path).drop_after("a", 3)
    assert not (tmp_path / "log.jsonl").exists()


# ---- reading a run back ------------------------------------------------------------------------------------

def test_read_metrics_of_a_finished_run(tmp_path):
    metrics = {"metric": "macro_f1", "dev": {"macro_f1": 0.25}, "test": None}
    write_json_atomic(tmp_path / "metrics.json", metrics)
    assert read_metrics(tmp_path) == metrics


def test_metrics_without_the_end_task_figure_name_the_file(tmp_path):
    """Every reader (report, plots, eval) gets the end task's figure or a one-line error."""
    write_json_atomic(tmp_path / "metrics.json", {"metric": "macro_f1", "dev": {"accuracy": 0.25}, "test": None})
    with pytest.raises(TartanError) as caught:
        read_metrics(tmp_path)
    assert caught.value.path == str(tmp_path / "metrics.json") and "dev has no number for 'macro_f1'" in caught.value.message


def test_read_metrics_of_an_unfinished_run_names_the_folder(tmp_path):
    with pytest.raises(TartanError) as caught:
        read_metrics(tmp_path)
    assert caught.value.path == str(tmp_path) and "not a finished run" in caught.value.message


def test_malformed_metrics_name_the_file_and_line(tmp_path):
    (tmp_path / "metrics.json").write_text('{\n "dev": 1,\n oops\n}\n')
    with pytest.raises(TartanError) as caught:
        read_metrics(tmp_path)
    error = caught.value
    assert (error.path, error.line) == (str(tmp_path / "metrics.json"), 3) and "malformed JSON" in error.message


def test_read_config(tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 3\ntrain:\n  epochs: 2\n")
    assert read_config(tmp_path) == {"seed": 3, "train": {"epochs": 2}}
    (tmp_path / "config.yaml").write_text("# nothing\n")
    assert read_config(tmp_path) == {}


def test_a_missing_or_malformed_config_names_the_file(tmp_path):
    with pytest.raises(TartanError) as caught:
        read_config(tmp_path)
    assert caught.value.path == str(tmp_path / "config.yaml") and "run config not found" in caught.value.message
    (tmp_path / "config.yaml").write_text("seed: 1\ntrain:\n\tepochs: 2\n")
    with pytest.raises(TartanError) as caught:
        read_config(tmp_path)
    assert caught.value.path == str(tmp_path / "config.yaml") and caught.value.line == 3
    assert "malformed YAML" in caught.value.message
