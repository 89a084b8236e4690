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


# the labelled auxiliary task splits 8 rows 4 + 4; the masked-LM one (TAPT) on batches of 7 splits them
# 4 + 3 with unequal numbers of masked tokens, which each process's mean loss must be weighted by
@pytest.mark.parametrize("recipe, auxiliary, batch_size", [("mt_tartan", "toy_pairs", 8), ("meta_tartan", "toy_pairs", 8),
                                                           ("mt_tartan", "tapt", 7)])
def test_two_processes_match_one_process_on_the_same_global_batches(recipe, auxiliary, batch_size, model_without_dropout,
                                                                    data_dir, tmp_path):
    extra = {"train.max_steps": 3, "train.eval_every": 3, "train.head_dropout": 0.0, "train.log_every": 1,
             "train.batch_size": batch_size, "multitask.auxiliary": auxiliary,
             "multitask.auxiliary_batch_size": batch_size,
             "meta.dev_batch_size": 7}  # dev batches of 7 split 4 + 3: the dev gradient is weighted by share too
    for processes in (1, 2):
        run(processes, recipe, tiny_overrides(model_without_dropout, data_dir, tmp_path / f"p{processes}", **extra))
    one, two = tmp_path / "p1", tmp_path / "p2"
    assert [json.loads((d / "metrics.json").read_text())["processes"] for d in (one, two)] == [1, 2]
    for (step_a, task_a, w_a), (step_b, task_b, w_b) in zip(weights(one), weights(two), strict=True):
        assert (step_a, task_a) == (step_b, task_b) and w_a == pytest.approx(w_b, abs=1e-5)
    if recipe == "meta_tartan":
        assert len({w for _, _, w in weights(one)}) > 1  # the weights did move
    start = load_file(str(model_without_dropout / "model.safetensors"))
    for part in ("model/model.safetensors", "heads/toy.safetensors", f"heads/{auxiliary}.safetensors"):
        a, b = load_file(str(one / part)), load_file(str(two / part))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key], b[key], atol=1e-5), f"{part}: {key}"
    moved = [k for k in start if k in load_file(str(one / "model/model.safetensors"))
             and not torch.equal(start[k], load_file(str(one / "model/model.safetensors"))[k])]
    assert moved  # training changed the body, so the comparison above means something
