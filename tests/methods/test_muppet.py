"""The muppet method on tiny models: loss scaling, the summed heterogeneous update, pre-finetuning
heads left out of the fine-tuned model, the stage reused across seeds, R3F through a run."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from tartan.config import load_config
from tartan.errors import TartanError
from tartan.run import train
from tartan.rundir import RunLog
from tartan.tasks.classification import ClassificationTask
from tartan.weighting import StepInputs, strategies

from helpers import read_jsonl, recipe, tiny_overrides, write_task


def muppet_overrides(tiny_models, data_dir, run_dir, **extra):
    values = {"muppet.tasks": "toy_pairs,three", "muppet.max_steps": 4, "muppet.batch_size": 4,
              "muppet.eval_every": 2, "muppet.progress": "false", "muppet.precision": "fp32",
              "train.max_steps": 3, **extra}
    return tiny_overrides(tiny_models["bert"], data_dir, run_dir, **values)


def prefinetune_steps(run_dir: Path) -> list[dict]:
    """The pre-finetuning stage's logged training steps (evaluations left out)."""
    return [r for r in RunLog(run_dir).records() if r.get("stage") == "prefinetune" and "loss" in r]


@pytest.fixture()
def muppet_data(data_dir):
    write_task(data_dir / "three", seed=3)  # a third labelled task, without pairs
    return data_dir


def test_loss_scaling_divides_by_log_of_the_number_of_classes(multitask_setup, tiny_models, data_dir):
    task, model = multitask_setup
    config = load_config(None, [f"model={tiny_models['bert']}", f"data_dir={data_dir}", "end_task=toy",
                                "data.max_length=32"])
    from tartan.models.body import load_body

    _, tokenizer = load_body(str(tiny_models["bert"]))
    scaled = ClassificationTask.from_config("toy", config, tokenizer, scale_loss=True)
    batch = task.collate("train", task.train_batches(0)[0])
    logits = model.heads["toy"](model.encode(batch), batch)
    classes = len(task.label_names)
    assert classes == 3
    assert scaled.loss(logits, batch).item() == pytest.approx(task.loss(logits, batch).item() / math.log(classes))
    # a uniform prediction costs 1 whatever the number of classes
    assert scaled.loss(torch.zeros_like(logits), batch).item() == pytest.approx(1.0)


def test_heterogeneous_update_is_the_sum_of_the_batches_gradients(multitask_setup):
    task, model = multitask_setup
    body = list(model.body.parameters())
    indices = task.train_batches(0)
    batches = [task.collate("train", i) for i in indices[:3]]
    loss = lambda b: task.loss(model.heads["toy"](model.encode(b), b), b)
    expected = [sum(g) for g in zip(*(torch.autograd.grad(loss(b), body) for b in batches))]
    # the loop sums a task's batches when it is drawn twice: "toy" twice, "other" once
    losses = {"toy": loss(batches[0]) + loss(batches[1]), "other": loss(batches[2])}
    strategy = strategies.get("sum")(["toy", "other"], "toy")
    weights = strategy.backward(losses, StepInputs(0, model, {}, {}, {}, Accelerator(cpu=True), {"toy": 2, "other": 1}))
    assert weights == pytest.approx({"toy": 2 / 3, "other": 1 / 3})
    for p, g in zip(body, expected):
        assert torch.allclose(p.grad, g, atol=1e-6)


@pytest.mark.parametrize("batching", ["heterogeneous", "batch_homogeneous", "dataset_homogeneous"])
def test_muppet_runs_drops_its_heads_and_reuses_the_stage(batching, tiny_models, muppet_data, tmp_path):
    first = train(load_config(recipe("muppet"), muppet_overrides(
        tiny_models, muppet_data, tmp_path / "s0", **{"muppet.batching": batching})))
    # train.max_steps caps the fine-tuning; pre-finetuning keeps its own muppet.max_steps
    assert list(first["stages"]) == ["prefinetune", "finetune"]
    assert first["stages"]["prefinetune"]["steps"] == 4 and first["stages"]["finetune"]["steps"] == 3
    assert set(first["stages"]["prefinetune"]["best_dev"]["tasks"]) == {"toy_pairs", "three"}
    assert sorted(p.name for p in (tmp_path / "s0" / "heads").iterdir()) == ["toy.json", "toy.safetensors"]
    second = train(load_config(recipe("muppet"), muppet_overrides(
        tiny_models, muppet_data, tmp_path / "s1", seed=1, **{"muppet.batching": batching})))
    assert second["stages"]["prefinetune"]["reused"] and "reused" not in first["stages"]["prefinetune"]
    assert sorted(p.name for p in (tmp_path / "s1" / "heads").iterdir()) == ["toy.json", "toy.safetensors"]


def test_muppet_with_r3f_runs(tiny_models, muppet_data, tmp_path):
    metrics = train(load_config(recipe("muppet"), muppet_overrides(
        tiny_models, muppet_data, tmp_path / "r", **{"muppet.r3f": "true", "muppet.r3f_eps": 0.1})))
    assert metrics["stages"]["prefinetune"]["steps"] == 4


def test_prefinetuning_is_recomputed_when_its_data_or_heads_change(tiny_models, muppet_data, tmp_path):
    # the stage's key covers the labelled files and the pre-finetuning heads' own dropout; the
    # fine-tuning's head dropout and the end task are no part of it
    def run(name, **extra):
        return train(load_config(recipe("muppet"), muppet_overrides(tiny_models, muppet_data, tmp_path / name,
                                                                           **extra)))["stages"]["prefinetune"]

    assert "reused" not in run("first", **{"muppet.head_dropout": 0.3})
    stored = list((tmp_path / "cache" / "stages").glob("prefinetune-*"))
    assert len(stored) == 1 and json.loads((stored[0] / "heads" / "three.json").read_text())["dropout"] == 0.3
    assert run("finetune_dropout", **{"muppet.head_dropout": 0.3, "train.head_dropout": 0.0})["reused"]
    write_task(muppet_data / "four", seed=4)
    assert run("another_end_task", **{"muppet.head_dropout": 0.3, "end_task": "four"})["reused"]
    assert "reused" not in run("default_dropout")
    train_file = muppet_data / "three" / "train.jsonl"
    lines = train_file.read_text().splitlines()
    train_file.write_text("\n".join(lines[:-1]) + "\n")  # one example fewer
    assert "reused" not in run("changed_data", **{"muppet.head_dropout": 0.3})


def test_loss_scaling_through_a_muppet_run(tiny_models, muppet_data, tmp_path):
    # the first step's losses come from the same batches and weights: scaled = unscaled / log(C)
    def first_losses(name, scale):
        train(load_config(recipe("muppet"), muppet_overrides(
            tiny_models, muppet_data, tmp_path / name, **{"muppet.scale_loss": scale, "muppet.log_every": 1})))
        return next(r["loss"] for r in prefinetune_steps(tmp_path / name) if r["step"] == 1)

    scaled, unscaled = first_losses("scaled", "true"), first_losses("unscaled", "false")
    assert set(scaled) == set(unscaled) and scaled
    for name, loss in scaled.items():
        classes = len({row["label"] for row in read_jsonl(muppet_data / name / "train.jsonl")})
        assert classes > 1 and loss == pytest.approx(unscaled[name] / math.log(classes), rel=1e-4)


def test_logged_loss_is_a_mean_over_the_tasks_own_batches(tiny_models, muppet_data, tmp_path):
    # 4 batches an update from 2 tasks: some task is drawn at least twice in every step. Scaled, a
    # near-uniform prediction of the fresh heads costs about 1 a batch; a sum over a task's batches, or
    # a mean over steps that counts the steps a task was not drawn in, would stray from 1.
    train(load_config(recipe("muppet"), muppet_overrides(
        tiny_models, muppet_data, tmp_path / "run", **{"muppet.scale_loss": "true", "muppet.log_every": 2,
                                                       "muppet.tasks_per_update": 4})))
    logged = prefinetune_steps(tmp_path / "run")
    assert [r["step"] for r in logged] == [2, 4]
    for losses in (r["loss"] for r in logged):
        assert losses and set(losses) <= {"toy_pairs", "three"}
        assert all(0.5 < value < 1.5 for value in losses.values()), losses


@pytest.mark.parametrize("tasks, message", [("toy,three", "lists the end task 'toy'"), ("[]", "muppet.tasks is empty")])
def test_muppet_bad_task_lists(tasks, message, tiny_models, muppet_data, tmp_path):
    with pytest.raises(TartanError, match=message):
        train(load_config(recipe("muppet"), muppet_overrides(tiny_models, muppet_data, tmp_path / "x",
                                                                    **{"muppet.tasks": tasks})))
    assert not (tmp_path / "x").exists()


def test_labelled_auxiliary_task_inside_meta_tartan_with_loss_scaling(tiny_models, data_dir, tmp_path):
    overrides = tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run", **{
        "train.max_steps": 3, "multitask.auxiliary": "tapt,toy_pairs", "multitask.scale_loss": "true",
        "multitask.auxiliary_batch_size": 4, "meta.dev_batch_size": 8, "train.log_every": 1})
    metrics = train(load_config(recipe("meta_tartan_supervised"), overrides))
    assert metrics["stages"]["multitask"]["steps"] == 3
    header, *rows = (tmp_path / "run" / "task_weights.csv").read_text().splitlines()
    assert {row.split(",")[1] for row in rows} == {"toy", "tapt", "toy_pairs"}
    assert sorted(p.name for p in (tmp_path / "run" / "heads").glob("*.safetensors")) == [
        "tapt.safetensors", "toy.safetensors", "toy_pairs.safetensors"]
