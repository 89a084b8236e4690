"""Two processes (torchrun, gloo on CPU) compute what one process computes on the same global batches:
each process takes its rows of every batch, per-task gradients (and META-TARTAN's dev gradient) are
averaged across processes before they are used."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel

from helpers import recipe, tiny_overrides


@pytest.fixture(scope="module")
def model_without_dropout(tiny_models, tmp_path_factory) -> Path:
    """Dropout draws differ between one process and two; without it the two computations are the same."""
    folder = tmp_path_factory.mktemp("nodropout")
    config = AutoConfig.from_pretrained(tiny_models["bert"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    AutoModel.from_pretrained(tiny_models["bert"], config=config).save_pretrained(folder)
    for file in Path(tiny_models["bert"]).glob("*token*"):
        (folder / file.name).write_bytes(file.read_bytes())
    return folder


def run(processes: int, name: str, overrides: list[str]) -> None:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                if processes > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*launcher, "-m", "tartan", "train", str(recipe(name)), *overrides],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def weights(run_dir: Path) -> list[tuple[int, str, float]]:
    with open(run_dir / "task_weights.csv") as rows:
        return [(int(r["step"]), r["task"], float(r["weight"])) for r in csv.DictReader(rows)]


def assert_match_up_to_summation_order(a: dict, b: dict) -> None:
    # several processes sum in another order: a gradient component within rounding of zero may change
    # sign, and AdamW's first steps move it by the learning rate (1e-3) either way; every other weight
    # agrees (a fresh-clone CI run saw one weight off by 1.08e-5 with three processes)
    differences = torch.cat([(a[k] - b[k]).abs().reshape(-1) for k in a])
    # one component per thousand, and at least one so that a small head may hold the single one
    assert int((differences > 1e-5).sum()) <= max(1, differences.numel() // 1000)
    assert float(differences.max()) < 3 * 2e-3


# the labelled auxiliary task splits 8 rows 4 + 4; the masked-LM one (TAPT) on batches of 7 splits them
# 4 + 3 with unequal numbers of masked tokens, which each process's mean loss must be weighted by
# 3 processes: the end task's batches of 8 split 3 + 3 + 2 (META's meta head gathers rows of unequal
# counts), dev batches of 7 split 3 + 2 + 2, and auxiliary batches of 2 are whole in every process
# MT with toy_pairs warms its heads for the first step (the body frozen: no bucket fills), and the
# overlapped averaging learns its buckets on the second; with TAPT for two steps, while the masked-LM
# decoder tied to the word embeddings still reaches them (no bucket may be learned from that)
# META accumulating 2 micro-batches of 5 (3 + 2): the meta head fits on both micro-batches' rows, gathered
@pytest.mark.parametrize("recipe, auxiliary, batch_size, processes, auxiliary_batch_size, head_warmup, accumulate", [
    ("mt_tartan", "toy_pairs", 8, 2, 8, 1, 1), ("meta_tartan", "toy_pairs", 8, 2, 8, 0, 1),
    ("mt_tartan", "tapt", 7, 2, 7, 2, 1), ("meta_tartan", "toy_pairs", 8, 3, 2, 0, 1),
    ("meta_tartan", "toy_pairs", 5, 2, 5, 0, 2)])
def test_several_processes_match_one_process_on_the_same_global_batches(recipe, auxiliary, batch_size, processes,
                                                                        auxiliary_batch_size, head_warmup, accumulate,
                                                                        model_without_dropout, data_dir, tmp_path):
    extra = {"train.max_steps": 3, "train.eval_every": 3, "train.head_dropout": 0.0, "train.log_every": 1,
             "train.batch_size": batch_size, "multitask.auxiliary": auxiliary,
             "multitask.auxiliary_batch_size": auxiliary_batch_size, "train.head_warmup_steps": head_warmup,
             "train.accumulate": accumulate,
             "meta.dev_batch_size": 7}  # dev batches of 7 split 4 + 3: the dev gradient is weighted by share too
    for count in (1, processes):
        run(count, recipe, tiny_overrides(model_without_dropout, data_dir, tmp_path / f"p{count}", **extra))
    one, two = tmp_path / "p1", tmp_path / f"p{processes}"
    assert [json.loads((d / "metrics.json").read_text())["processes"] for d in (one, two)] == [1, processes]
    for (step_a, task_a, w_a), (step_b, task_b, w_b) in zip(weights(one), weights(two), strict=True):
        assert (step_a, task_a) == (step_b, task_b) and w_a == pytest.approx(w_b, abs=1e-5)
    if recipe == "meta_tartan":
        assert len({w for _, _, w in weights(one)}) > 1  # the weights did move
    start = load_file(str(model_without_dropout / "model.safetensors"))
    parts = {part: (load_file(str(one / part)), load_file(str(two / part)))
             for part in ("model/model.safetensors", "heads/toy.safetensors", f"heads/{auxiliary}.safetensors")}
    for part, (a, b) in parts.items():
        assert a.keys() == b.keys(), part
        assert_match_up_to_summation_order(a, b)
    trained = parts["model/model.safetensors"][0]
    moved = [k for k in start if k in trained and not torch.equal(start[k], trained[k])]
    assert moved  # training changed the body, so the comparison above means something


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_nodes(name: str, overrides: list[str], port: int) -> list[subprocess.Popen]:
    """Two "machines" of 2 processes each on this one: two torchrun launchers meeting at 127.0.0.1."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=2",
                              f"--node_rank={rank}", "--master_addr=127.0.0.1", f"--master_port={port}",
                              "-m", "tartan", "train", str(recipe(name)), *overrides],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                             start_new_session=True)
            for rank in (0, 1)]


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return [pid] + [p for child in children for p in process_tree(child)]


def finish(nodes: list[subprocess.Popen]) -> None:
    for node in nodes:
        _, err = node.communicate(timeout=300)
        assert node.returncode == 0, err[-3000:]


def body(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


@pytest.mark.parametrize("name, extra", [
    ("meta_tartan", {"multitask.auxiliary": "tapt", "multitask.auxiliary_batch_size": 6}),
    ("muppet", {"muppet.tasks": "[toy_pairs]", "muppet.max_steps": 3, "muppet.batch_size": 6,
                "muppet.tasks_per_update": 2})])
def test_two_machines_of_two_processes_match_one_process(name, extra, model_without_dropout, data_dir, tmp_path):
    # batches of 6 rows on 4 processes split 2 + 2 + 1 + 1
    overrides = {"train.max_steps": 3, "train.eval_every": 3, "train.head_dropout": 0.0, "train.batch_size": 6,
                 "meta.dev_batch_size": 6, "pretrain.progress": "false", "muppet.progress": "false", **extra}
    run(1, name, tiny_overrides(model_without_dropout, data_dir, tmp_path / "one", **overrides))
    finish(launch_nodes(name, tiny_overrides(model_without_dropout, data_dir, tmp_path / "four", **overrides),
                        free_port()))
    one, four = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "four"))
    assert four["processes"] == 4
    print(f"\n{name}: 1 process  dev loss {one['dev']['loss']:.8f}  test accuracy {one['test']['accuracy']:.4f}"
          f"\n{name}: 2 x 2      dev loss {four['dev']['loss']:.8f}  test accuracy {four['test']['accuracy']:.4f}")
    assert four["test"]["accuracy"] == pytest.approx(one["test"]["accuracy"])
    assert four["dev"]["loss"] == pytest.approx(one["dev"]["loss"], abs=1e-5)
    a, b = body(tmp_path / "one"), body(tmp_path / "four")
    assert_match_up_to_summation_order(a, b)


def test_a_run_of_two_machines_killed_and_resumed_ends_as_one_never_stopped(tiny_models, data_dir, tmp_path):
    # both launchers SIGKILLed after the first checkpoint, then launched again: batches of 6 rows split
    # 2 + 2 + 1 + 1. (That each process gets its own generators back is checked in
    # tests/training/test_checkpoint.py: here the steps after the kill came out the same without it.)
    import signal
    import time

    overrides = {"train.max_steps": 6, "train.eval_every": 2, "train.log_every": 1, "train.batch_size": 6,
                 "multitask.auxiliary": "tapt",
                 "multitask.auxiliary_batch_size": 6, "meta.dev_batch_size": 6}
    finish(launch_nodes("meta_tartan", tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "whole", **overrides),
                        free_port()))
    stopped = tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "stopped", **overrides)
    nodes = launch_nodes("meta_tartan", stopped, free_port())
    state = tmp_path / "stopped" / "checkpoint" / "multitask" / "last" / "state.json"
    deadline = time.time() + 240
    while not state.is_file() and time.time() < deadline and all(n.poll() is None for n in nodes):
        time.sleep(0.05)
    # torchrun starts each worker in a session of its own: the launchers and their workers, all of them
    for pid in [pid for node in nodes for pid in process_tree(node.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for node in nodes:
        node.wait()
    killed_at = json.loads(state.read_text())["loop"]["step"]
    assert 0 < killed_at < 6 and not (tmp_path / "stopped" / "metrics.json").exists()
    finish(launch_nodes("meta_tartan", stopped, free_port()))
    # the steps after the kill: their losses (of the main process's rows, drawn under dropout) and the
    # weights they learned are those of the run never stopped (the saved body is the dev-best one)
    def losses(run_dir: Path) -> dict[str, float]:
        records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
        return {f"{r['step']} {task}": loss for r in records if "loss" in r and r["step"] > killed_at
                for task, loss in r["loss"].items()}

    after_kill = losses(tmp_path / "whole")
    assert after_kill and losses(tmp_path / "stopped") == pytest.approx(after_kill, abs=1e-6)
    a, b = body(tmp_path / "whole"), body(tmp_path / "stopped")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    for (step_a, task_a, w_a), (step_b, task_b, w_b) in zip(weights(tmp_path / "whole"), weights(tmp_path / "stopped"),
                                                            strict=True):
        assert (step_a, task_a) == (step_b, task_b) and w_a == pytest.approx(w_b, abs=1e-6)


def test_gradients_sent_in_bf16_train_close_to_one_process(model_without_dropout, data_dir, tmp_path):
    extra = {"train.max_steps": 3, "train.eval_every": 3, "train.head_dropout": 0.0, "train.batch_size": 8,
             "multitask.auxiliary": "toy_pairs", "multitask.auxiliary_batch_size": 8, "meta.dev_batch_size": 8}
    run(1, "meta_tartan", tiny_overrides(model_without_dropout, data_dir, tmp_path / "one", **extra))
    run(2, "meta_tartan", tiny_overrides(model_without_dropout, data_dir, tmp_path / "bf16", **extra,
                                         **{"train.reduce_dtype": "bf16"}))
    a, b = body(tmp_path / "one"), body(tmp_path / "bf16")
    differences = torch.cat([(a[k] - b[k]).abs().reshape(-1) for k in a])
    # bf16 keeps 8 bits of mantissa: not exact (else nothing was sent in bf16), and close: AdamW's first
    # steps move a weight by about the learning rate (1e-3) whatever its gradient's size, so a component
    # whose sign bf16 flips differs by at most 2e-3 a step; nearly all agree far closer
    assert 0 < float(differences.max()) < 3 * 2e-3
    assert float((differences > 1e-4).float().mean()) < 0.01


@pytest.mark.parametrize("end_task", ["choose", "qa"])
def test_a_multiple_choice_or_span_end_task_on_three_processes_matches_one(end_task, model_without_dropout, data_dir,
                                                                           tmp_path):
    # META's meta head gathers what the end task's head reads: each row's first-token vectors of
    # every choice, or every token of a QA window (padded to max_length: each process pads its
    # windows to its own longest). Batches of 8 split 3 + 3 + 2 rows, dev batches of 7 3 + 2 + 2
    from helpers import write_choices, write_questions

    (write_choices if end_task == "choose" else write_questions)(data_dir / end_task)
    extra = {"end_task": end_task, "train.max_steps": 3, "train.eval_every": 3, "train.head_dropout": 0.0,
             "train.log_every": 1, "multitask.auxiliary": "toy_pairs", "meta.dev_batch_size": 7,
             "data.max_length": 48}
    for count in (1, 3):
        run(count, "meta_tartan", tiny_overrides(model_without_dropout, data_dir, tmp_path / f"p{count}", **extra))
    one, three = tmp_path / "p1", tmp_path / "p3"
    for (step_a, task_a, w_a), (step_b, task_b, w_b) in zip(weights(one), weights(three), strict=True):
        assert (step_a, task_a) == (step_b, task_b) and w_a == pytest.approx(w_b, abs=1e-5)
    a, b = body(one), body(three)
    assert_match_up_to_summation_order(a, b)
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (one, three)]
    metric = metrics[0]["metric"]
    assert metrics[1]["processes"] == 3 and metrics[1]["dev"][metric] == pytest.approx(metrics[0]["dev"][metric], abs=1e-5)
