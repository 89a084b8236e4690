"""Fuzzing what tartan reads (issue 27): valid task files, recipes, sweep files and run directories,
mutated (truncated, bytes flipped, lines dropped or doubled, values of another type, keys dropped or
doubled), must each either be read or give a TartanError that names the file (or its folder); never
another exception. Reading writes nothing, so no outcome leaves a partial output; the report, which
writes, must write all of its files or none."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tartan.config import load_config
from tartan.data.labelled import load_labelled_task
from tartan.errors import TartanError

from helpers import recipe, tiny_overrides

def fuzz(examples: int) -> settings:
    """The same cases on every run (derandomized: CI is reproducible, and no example database)."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# ---- mutations

ODD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True),
                       st.text(max_size=6), st.lists(st.integers(0, 3), max_size=2),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))

BYTE_MUTATIONS = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.just("drop line"), st.floats(0, 1)),
    st.tuples(st.just("double line"), st.floats(0, 1)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=6)),
)


def mutate_bytes(data: bytes, mutation: tuple) -> bytes:
    kind, where = mutation[0], mutation[1]
    at = int(where * len(data))
    if kind == "truncate":
        return data[:at]
    if kind == "flip":
        return data[:at] + bytes([mutation[2]]) + data[at + 1:]
    if kind == "insert":
        return data[:at] + mutation[2] + data[at:]
    lines = data.splitlines(keepends=True)
    if not lines:
        return data
    line = min(int(where * len(lines)), len(lines) - 1)
    if kind == "drop line":
        return b"".join(lines[:line] + lines[line + 1:])
    return b"".join(lines[:line + 1] + lines[line:])  # double line


VALUE_MUTATIONS = st.tuples(st.sampled_from(["retype", "drop"]), st.floats(0, 1), ODD_VALUES)


def mutate_value(value, mutation: tuple):
    """A copy of a JSON/YAML value with one of its entries (chosen by position among all of them)
    given a value of another type, or dropped."""
    kind, where, odd = mutation
    entries = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, child in node.items():
                entries.append(path + (key,))
                walk(child, path + (key,))
        elif isinstance(node, list):
            for i, child in enumerate(node):
                entries.append(path + (i,))
                walk(child, path + (i,))

    walk(value, ())
    if not entries:
        return odd
    path = entries[min(int(where * len(entries)), len(entries) - 1)]
    copy = json.loads(json.dumps(value))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if kind == "drop":
        del parent[path[-1]]
    else:
        parent[path[-1]] = odd
    return copy


def mutated_file(original: bytes, how: tuple, parse, dump) -> bytes:
    """`original` with a byte mutation, or with a value mutation of what `parse` reads from it."""
    if how[0] == "bytes":
        return mutate_bytes(original, how[1])
    return dump(mutate_value(parse(original), how[1])).encode()


MUTATIONS = st.one_of(st.tuples(st.just("bytes"), BYTE_MUTATIONS), st.tuples(st.just("value"), VALUE_MUTATIONS))


def names_the_file(error: TartanError, *paths: Path) -> bool:
    return any(str(path) in str(error) for path in paths)


# ---- task files

def jsonl_rows(data: bytes) -> list:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def dump_jsonl(rows) -> str:
    rows = rows if isinstance(rows, list) else [rows]
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.mark.parametrize("split", ["train", "dev"])
@fuzz(1000)
@given(how=MUTATIONS)
def test_a_mutated_task_file_is_read_or_named(split, how, data_dir):
    folder = data_dir / "toy"
    path = folder / f"{split}.jsonl"
    original = path.read_bytes()  # put back after every case
    path.write_bytes(mutated_file(original, how, jsonl_rows, dump_jsonl))
    try:
        task = load_labelled_task(data_dir, "toy")
        assert len(task.label_names) >= 2 and all(t.strip() for s in task.splits.values() for t in s.texts)
        event("read")
    except TartanError as error:
        assert names_the_file(error, path, folder), str(error)
        event("TartanError naming the file")
    finally:
        path.write_bytes(original)


# ---- recipes

RECIPES = ["finetune", "meta_tartan", "muppet", "dapt_tapt"]


@pytest.mark.parametrize("name", RECIPES)
@fuzz(500)
@given(how=MUTATIONS)
def test_a_mutated_recipe_is_loaded_or_named(name, how, tmp_path):
    original = recipe(name).read_bytes()
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(mutated_file(original, how, lambda b: yaml.safe_load(b.decode()),
                                  lambda v: yaml.safe_dump(v, sort_keys=False)))
    try:
        load_config(path, [])
        event("read")
    except TartanError as error:
        assert names_the_file(error, path), str(error)
        event("TartanError naming the file")


# ---- sweep files

SWEEP = """root: {root}
recipes: [finetune, mt_tartan]
end_tasks: [toy]
seeds: [0, 1]
grid: {{train.lr_body: [1.0e-4, 2.0e-4]}}
overrides: {{data_dir: {data}, train.max_steps: 5}}
end_task_overrides: {{toy: {{train.epochs: 2}}}}
"""


@fuzz(800)
@given(how=MUTATIONS)
def test_a_mutated_sweep_file_is_loaded_or_named(how, data_dir, tmp_path):
    from tartan.sweep import load_sweep

    path = tmp_path / "sweep.yaml"
    original = SWEEP.format(root=tmp_path / "runs", data=data_dir).encode()
    path.write_bytes(mutated_file(original, how, lambda b: yaml.safe_load(b.decode()),
                                  lambda v: yaml.safe_dump(v, sort_keys=False)))
    try:
        load_sweep(path)
        event("read")
    except TartanError as error:
        assert names_the_file(error, path), str(error)
        event("TartanError naming the file")
    assert not (tmp_path / "runs").exists()  # loading a sweep writes nothing


# ---- run directories

@pytest.fixture()
def finished_run(tiny_models, data_dir, tmp_path) -> Path:
    from tartan.cli import main

    run_dir = tmp_path / "runs" / "finetune" / "toy" / "seed0"
    assert main(["train", str(recipe("finetune")), *tiny_overrides(tiny_models["bert"], data_dir, run_dir,
                                                                   **{"train.max_steps": 2})]) == 0
    return run_dir


RUN_FILES = {  # file -> (parse, dump) for value mutations
    "config.yaml": (lambda b: yaml.safe_load(b.decode()), lambda v: yaml.safe_dump(v, sort_keys=False)),
    "metrics.json": (lambda b: json.loads(b), json.dumps),
    "heads/toy.json": (lambda b: json.loads(b), json.dumps),
    "model/config.json": (lambda b: json.loads(b), json.dumps),
    "heads/toy.safetensors": (None, None),
    "log.jsonl": (jsonl_rows, dump_jsonl),
}


@fuzz(400)
@given(file=st.sampled_from(sorted(RUN_FILES)), how=MUTATIONS)
def test_a_mutated_run_directory_is_read_or_named(file, how, finished_run, tmp_path):
    """What predict, eval and export read (load_finished) and what report reads (build_report and
    its files: all three, or none)."""
    from tartan.inference import load_finished
    from tartan.plots.curves import read_dev_curve
    from tartan.report import build_report, write_report

    parse, dump = RUN_FILES[file]
    if parse is None:
        how = ("bytes", how[1]) if how[0] == "bytes" else ("bytes", ("truncate", how[1][1]))
    path = finished_run / file
    original = path.read_bytes()
    path.write_bytes(mutated_file(original, how, parse, dump))
    out = tmp_path / "report"
    try:
        for read in (lambda: load_finished(finished_run, "cpu"), lambda: read_dev_curve(finished_run),
                     lambda: write_report(build_report([tmp_path / "runs"], permutations=10), "finetune", out)):
            try:
                read()
                event("read")
            except TartanError as error:
                assert names_the_file(error, path, finished_run), str(error)
                event("TartanError naming the file")
        written = sorted(p.name for p in out.iterdir()) if out.exists() else []
        assert written in ([], ["report.csv", "report.md", "report.tex"])
    finally:
        path.write_bytes(original)
        shutil.rmtree(out, ignore_errors=True)
