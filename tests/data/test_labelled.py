"""tartan.data.labelled: task folders read and checked, every bad row one TartanError naming file and line."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tartan.data.labelled import file_digest, load_labelled_task
from tartan.errors import TartanError

from helpers import LABELS, read_jsonl, write_jsonl


def write_delimited(path: Path, rows: list[dict], delimiter: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def load_error(data_dir: Path, name: str = "toy") -> TartanError:
    with pytest.raises(TartanError) as caught:
        load_labelled_task(data_dir, name)
    assert "\n" not in str(caught.value)
    return caught.value


def test_toy_task_loads_with_sorted_label_vocabulary_from_train(data_dir):
    task = load_labelled_task(data_dir, "toy")
    assert task.name == "toy" and task.folder == data_dir / "toy"
    assert task.label_names == sorted(LABELS) == ["Background", "Extends", "Uses"]
    assert set(task.splits) == {"train", "dev", "test"}
    assert [len(task.splits[s]) for s in ("train", "dev", "test")] == [48, 16, 16]
    train = task.splits["train"]
    assert train.text_pairs is None
    assert train.digest == file_digest(data_dir / "toy" / "train.jsonl")
    rows = read_jsonl(data_dir / "toy" / "train.jsonl")
    assert train.texts == [r["text"] for r in rows] and train.labels == [r["label"] for r in rows]
    ids = task.label_ids("train")
    assert [task.label_names[i] for i in ids] == train.labels


def test_label_vocabulary_comes_from_train_only(tmp_path):
    folder = tmp_path / "data" / "t"
    folder.mkdir(parents=True)
    write_jsonl(folder / "train.jsonl", [{"text": "a", "label": "zebra"}, {"text": "b", "label": "apple"},
                                         {"text": "c", "label": "mango"}, {"text": "d", "label": "apple"}])
    write_jsonl(folder / "dev.jsonl", [{"text": "e", "label": "apple"}])  # dev need not have every label
    task = load_labelled_task(tmp_path / "data", "t")
    assert task.label_names == ["apple", "mango", "zebra"]
    assert task.label_ids("train") == [2, 0, 1, 0] and task.label_ids("dev") == [0]


def test_integer_labels_are_read_as_strings(tmp_path):
    folder = tmp_path / "data" / "t"
    folder.mkdir(parents=True)
    write_jsonl(folder / "train.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 0}])
    write_jsonl(folder / "dev.jsonl", [{"text": "c", "label": "1"}])
    task = load_labelled_task(tmp_path / "data", "t")
    assert task.label_names == ["0", "1"] and task.splits["dev"].labels == ["1"]


@pytest.fixture()
def corrupt(data_dir):
    """Rewrite a split of the toy task: corrupt(split, edit) where edit maps the rows to new rows."""
    def rewrite(split: str, edit) -> Path:
        path = data_dir / "toy" / f"{split}.jsonl"
        write_jsonl(path, edit(read_jsonl(path)))
        return path
    return rewrite


def test_missing_text_names_file_and_line(data_dir, corrupt):
    path = corrupt("train", lambda rows: rows[:3] + [{"label": "Uses"}] + rows[3:])
    error = load_error(data_dir)
    assert (error.path, error.line) == (str(path), 4)
    assert "missing field 'text'" in error.message


@pytest.mark.parametrize("value, kind", [(5, "int"), (None, "NoneType"), (["a"], "list"), ({"a": 1}, "dict")])
def test_non_string_text_names_file_and_line(data_dir, corrupt, value, kind):
    path = corrupt("train", lambda rows: rows[:1] + [{"text": value, "label": "Uses"}] + rows[1:])
    error = load_error(data_dir)
    assert (error.path, error.line) == (str(path), 2)
    assert "'text'" in error.message and "string" in error.message and kind in error.message


@pytest.mark.parametrize("row", [{"text": "a"}, {"text": "a", "label": None}, {"text": "a", "label": ""}])
def test_missing_label_names_file_and_line(data_dir, corrupt, row):
    path = corrupt("train", lambda rows: rows[:5] + [row] + rows[5:])
    error = load_error(data_dir)
    assert (error.path, error.line) == (str(path), 6)
    assert "missing field 'label'" in error.message


@pytest.mark.parametrize("label", [True, 1.5, ["Uses"]])
def test_label_of_the_wrong_type(data_dir, corrupt, label):
    path = corrupt("train", lambda rows: [{"text": "a", "label": label}] + rows)
    error = load_error(data_dir)
    assert (error.path, error.line) == (str(path), 1)
    assert "'label'" in error.message


@pytest.mark.parametrize("split", ["dev", "test"])
def test_label_train_never_had_names_the_split_file_and_line(data_dir, corrupt, split):
    path = corrupt(split, lambda rows: rows[:6] + [{"text": "x", "label": "Compare"}] + rows[6:])
    error = load_error(data_dir)
    assert (error.path, error.line) == (str(path), 7)
    assert "'Compare'" in error.message and "train" in error.message
    assert all(label in error.message for label in LABELS)


def test_line_numbers_count_blank_lines(data_dir):
    path = data_dir / "toy" / "train.jsonl"
    rows = read_jsonl(path)
    write_jsonl(path, [rows[0], "", rows[1], "   ", {"text": "a"}])
    error = load_error(data_dir)
    assert (error.path, error.line) == (str(path), 5)


def test_text_pairs_are_read(data_dir):
    task = load_labelled_task(data_dir, "toy_pairs")
    rows = read_jsonl(data_dir / "toy_pairs" / "dev.jsonl")
    dev = task.splits["dev"]
    assert dev.text_pairs == [r["text_pair"] for r in rows]
    assert all(task.splits[s].text_pairs is not None for s in ("train", "dev", "test"))


def test_text_pair_missing_on_some_rows_names_the_first(data_dir):
    path = data_dir / "toy_pairs" / "train.jsonl"
    rows = read_jsonl(path)
    del rows[3]["text_pair"]
    write_jsonl(path, rows)
    error = load_error(data_dir, "toy_pairs")
    assert (error.path, error.line) == (str(path), 4)
    assert "text_pair" in error.message


def test_non_string_text_pair(data_dir):
    path = data_dir / "toy_pairs" / "train.jsonl"
    rows = read_jsonl(path)
    rows[2]["text_pair"] = 7
    write_jsonl(path, rows)
    error = load_error(data_dir, "toy_pairs")
    assert (error.path, error.line) == (str(path), 3)


def test_missing_task_folder_lists_the_folders(data_dir):
    (data_dir / "not_a_task.txt").write_text("files are not listed")
    error = load_error(data_dir, "citation_intent")
    assert error.path == str(data_dir / "citation_intent")
    assert "not found" in error.message and "toy, toy_pairs" in error.message
    assert "not_a_task" not in error.message


def test_missing_task_folder_in_an_empty_data_dir(tmp_path):
    (tmp_path / "data").mkdir()
    error = load_error(tmp_path / "data")
    assert "none" in error.message


def test_missing_data_dir(tmp_path):
    error = load_error(tmp_path / "nowhere")
    assert error.path == str(tmp_path / "nowhere")
    assert "data directory not found" in error.message


def test_missing_train_file(data_dir):
    (data_dir / "toy" / "train.jsonl").unlink()
    error = load_error(data_dir)
    assert error.path == str(data_dir / "toy") and "train" in error.message


def test_missing_dev_file(data_dir):
    (data_dir / "toy" / "dev.jsonl").unlink()
    error = load_error(data_dir)
    assert error.path == str(data_dir / "toy") and "no dev file" in error.message


def test_task_without_test_split_loads(data_dir):
    (data_dir / "toy" / "test.jsonl").unlink()
    task = load_labelled_task(data_dir, "toy")
    assert set(task.splits) == {"train", "dev"}


def test_only_requested_splits_are_read(data_dir):
    (data_dir / "toy" / "test.jsonl").write_bytes(b"\xff broken")
    task = load_labelled_task(data_dir, "toy", splits=("train", "dev"))
    assert set(task.splits) == {"train", "dev"}


@pytest.mark.parametrize("name", ["test.json", "test.jsonl.gz"])
def test_a_split_file_of_a_type_no_reader_reads_is_an_error_not_a_missing_split(data_dir, name):
    # the split would otherwise be silently absent (a task loads without a test split)
    (data_dir / "toy" / "test.jsonl").rename(data_dir / "toy" / name)
    error = load_error(data_dir)
    assert error.path == str(data_dir / "toy")
    assert error.message.startswith(f"{name}: not a file type") and ".jsonl" in error.message


def test_two_files_for_one_split_is_an_error(data_dir):
    rows = read_jsonl(data_dir / "toy" / "dev.jsonl")
    write_delimited(data_dir / "toy" / "dev.csv", rows, ",")
    error = load_error(data_dir)
    assert error.path == str(data_dir / "toy")
    assert "dev.jsonl" in error.message and "dev.csv" in error.message


def test_empty_split_file_is_an_error(data_dir):
    path = data_dir / "toy" / "dev.jsonl"
    path.write_text("")
    error = load_error(data_dir)
    assert error.path == str(path) and "empty" in error.message


@pytest.mark.parametrize("task", ["toy", "toy_pairs"])
@pytest.mark.parametrize("suffix, delimiter", [("csv", ","), ("tsv", "\t")])
def test_csv_and_tsv_task_folders_load_like_jsonl(data_dir, tmp_path, task, suffix, delimiter):
    other = tmp_path / f"as_{suffix}"
    for split in ("train", "dev", "test"):
        rows = read_jsonl(data_dir / task / f"{split}.jsonl")
        rows[0]["text"] = 'with, a comma and "quotes"'
        write_jsonl(data_dir / task / f"{split}.jsonl", rows)
        write_delimited(other / task / f"{split}.{suffix}", rows, delimiter)
    expected = load_labelled_task(data_dir, task)
    loaded = load_labelled_task(other, task)
    assert loaded.label_names == expected.label_names
    for split in ("train", "dev", "test"):
        a, b = loaded.splits[split], expected.splits[split]
        assert (a.texts, a.text_pairs, a.labels) == (b.texts, b.text_pairs, b.labels)
        assert a.path.suffix == f".{suffix}"


def test_csv_task_errors_name_the_csv_line(tmp_path):
    folder = tmp_path / "data" / "t"
    write_delimited(folder / "train.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}], ",")
    (folder / "dev.csv").write_text("text,label\nfine,x\n\nodd,z\n")
    error = load_error(tmp_path / "data", "t")
    assert (error.path, error.line) == (str(folder / "dev.csv"), 4)
    assert "'z'" in error.message


def test_csv_empty_label_cell_is_a_missing_label(tmp_path):
    folder = tmp_path / "data" / "t"
    (folder).mkdir(parents=True)
    (folder / "train.csv").write_text("text,label\na,x\nb,\n")
    error = load_error(tmp_path / "data", "t")
    assert (error.path, error.line) == (str(folder / "train.csv"), 3)
    assert "missing field 'label'" in error.message


def test_csv_without_text_column(tmp_path):
    folder = tmp_path / "data" / "t"
    folder.mkdir(parents=True)
    (folder / "train.csv").write_text("sentence,label\na,x\n")
    error = load_error(tmp_path / "data", "t")
    assert (error.path, error.line) == (str(folder / "train.csv"), 2)
    assert "missing field 'text'" in error.message


def test_rows_with_an_empty_text_are_skipped_and_counted_naming_the_file_and_lines(data_dir, capsys):
    path = data_dir / "toy_pairs" / "dev.jsonl"
    rows = read_jsonl(path)
    rows[1], rows[3] = {**rows[1], "text": "  "}, {**rows[3], "text_pair": ""}
    write_jsonl(path, rows)
    task = load_labelled_task(data_dir, "toy_pairs")
    assert len(task.splits["dev"]) == len(rows) - 2
    assert [t for t in task.splits["dev"].texts] == [r["text"] for i, r in enumerate(rows) if i not in (1, 3)]
    assert f"{path}: skipped 2 row(s) with an empty text or text_pair (line 2, 4)" in capsys.readouterr().err
