"""tartan.tasks.classification: label ids in the order of the train vocabulary, cross-entropy loss
(optionally over log(number of classes)), and dev/test metrics of the logits' argmax."""
from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score

from tartan.config import load_config
from tartan.data.batching import collate
from tartan.errors import TartanError
from tartan.models.body import load_body
from tartan.tasks import task_types
from tartan.tasks.classification import ClassificationTask

from helpers import LABELS, read_jsonl, write_jsonl


def toy_task(tiny_models, data_dir, name: str = "toy", overrides: tuple = (), **options) -> ClassificationTask:
    config = load_config(None, [f"model={tiny_models['bert']}", f"data_dir={data_dir}", "end_task=toy",
                                "data.max_length=32", "train.batch_size=8", *overrides])
    _, tokenizer = load_body(str(tiny_models["bert"]))
    return ClassificationTask.from_config(name, config, tokenizer, **options)


def test_the_task_type_is_registered():
    assert task_types.get("classification") is ClassificationTask


def test_label_ids_follow_the_sorted_train_labels_in_file_order(multitask_setup, data_dir):
    task, _ = multitask_setup
    assert task.label_names == sorted(LABELS) == ["Background", "Extends", "Uses"]
    for split in ("train", "dev", "test"):
        gold = [task.label_names.index(row["label"]) for row in read_jsonl(data_dir / "toy" / f"{split}.jsonl")]
        assert task.labels[split].tolist() == gold and task.num_examples(split) == len(gold)
    assert task.head_meta() == {"type": "classification", "labels": task.label_names, "dropout": 0.0,
                                "pairs": False}


def test_the_head_fits_the_body_and_the_labels(multitask_setup):
    task, model = multitask_setup
    head = task.make_head(model.body)
    assert (head.dense.in_features, head.out_proj.out_features) == (model.body.config.hidden_size, 3)


def test_a_training_epoch_is_every_example_once_in_batches_with_their_labels(multitask_setup):
    task, _ = multitask_setup
    batches = task.train_batches(0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(task.num_examples("train")))
    assert all(len(b) <= 8 for b in batches)
    batch = task.collate("train", batches[0])
    assert batch["labels"].tolist() == task.labels["train"][batches[0]].tolist()
    assert task.loss_units(batch) == len(batches[0])


def test_a_train_fraction_is_a_fixed_subset_of_the_end_tasks_rows_drawn_by_the_seed(tiny_models, data_dir):
    def rows(name="toy", seed=0, epoch=0):
        task = toy_task(tiny_models, data_dir, name, ("data.train_fraction=0.5", f"seed={seed}"))
        return task, sorted(np.concatenate(task.train_batches(epoch)).tolist())

    task, first = rows()
    assert len(first) == round(task.num_examples("train") / 2)
    assert rows(epoch=1)[1] == first and rows()[1] == first  # every epoch, and every run of the seed
    assert rows(seed=1)[1] != first
    other, every = rows("toy_pairs")  # another task of the run trains on all of its rows
    assert every == list(range(other.num_examples("train")))
    assert sorted(np.concatenate(task.shuffled_batches("dev", 0, 8)).tolist()) == list(range(task.num_examples("dev")))


def test_the_loss_is_the_mean_cross_entropy(multitask_setup):
    task, model = multitask_setup
    batch = task.collate("train", np.arange(6))
    torch.manual_seed(0)
    for output in (model("toy", batch), 3 * torch.randn(6, 3)):  # the untrained head's logits are near uniform
        by_hand = -torch.log_softmax(output.float(), -1)[torch.arange(6), batch["labels"]].mean()
        assert torch.allclose(task.loss(output, batch), by_hand, atol=1e-6)
    assert task.loss_scale == 1.0


def test_a_scaled_loss_is_divided_by_log_of_the_number_of_classes(tiny_models, data_dir):
    plain, scaled = toy_task(tiny_models, data_dir), toy_task(tiny_models, data_dir, scale_loss=True)
    output = torch.randn(5, 3)
    batch = {"labels": torch.tensor([0, 1, 2, 2, 1])}
    assert scaled.loss_scale == pytest.approx(1 / math.log(3))
    assert torch.allclose(scaled.loss(output, batch), plain.loss(output, batch) / math.log(3))
    assert torch.allclose(scaled.loss(torch.zeros(5, 3), batch), torch.tensor(1.0))  # uniform costs 1


def test_a_train_set_of_one_label_is_refused_and_two_scale_by_log_two(tiny_models, data_dir):
    # one label would train a one-way head whose dev accuracy is 100%
    folder = data_dir / "one_label"
    folder.mkdir()
    for split in ("train", "dev"):
        write_jsonl(folder / f"{split}.jsonl", [{"text": "zeta the model", "label": "only"}] * 4)
    with pytest.raises(TartanError, match="every row of train has the label 'only'"):
        toy_task(tiny_models, data_dir, "one_label")
    two = data_dir / "two_labels"
    two.mkdir()
    for split in ("train", "dev"):
        write_jsonl(two / f"{split}.jsonl", [{"text": "zeta the model", "label": "a"}, {"text": "kappa", "label": "b"}])
    assert toy_task(tiny_models, data_dir, "two_labels", scale_loss=True).loss_scale == pytest.approx(1 / math.log(2))


class LengthHead(torch.nn.Module):
    """Logits that tell the examples apart: the class is the input's length modulo 3."""

    def forward(self, hidden, batch):
        lengths = batch["attention_mask"].sum(1)
        return 10 * F.one_hot(lengths % 3, 3).float() + 0.1 * hidden[:, 0, :3]


def test_evaluate_is_sklearns_metrics_of_the_argmax_of_the_logits(multitask_setup):
    task, model = multitask_setup
    model.heads["toy"] = LengthHead()  # the untrained head predicts one class for all: this one, several
    model.train()
    logits, gold = task.predict_logits(model, "dev", contextlib.nullcontext)
    assert model.training  # put back as it was
    # the same logits as the whole split in one batch, in file order (the batches go by length)
    model.eval()
    with torch.no_grad():
        whole = model("toy", collate(task.encoded["dev"], np.arange(task.num_examples("dev")), task.pad_id))
    assert np.allclose(logits, whole.numpy(), atol=1e-5)
    assert gold.tolist() == task.labels["dev"].tolist()

    metrics = task.evaluate(model, "dev", contextlib.nullcontext)
    predicted = logits.argmax(-1)
    assert len(set(predicted.tolist())) > 1
    assert metrics["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro", zero_division=0))
    assert metrics["micro_f1"] == pytest.approx(f1_score(gold, predicted, average="micro", zero_division=0))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
    assert metrics["loss"] == pytest.approx(float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(gold))))


def test_the_configs_metric_is_the_end_tasks_and_other_tasks_keep_their_own(tiny_models, data_dir):
    config = load_config(None, [f"model={tiny_models['bert']}", f"data_dir={data_dir}", "end_task=toy",
                                "data.max_length=32", "metric=accuracy"])
    _, tokenizer = load_body(str(tiny_models["bert"]))
    assert ClassificationTask.from_config("toy", config, tokenizer).metric == "accuracy"
    assert ClassificationTask.from_config("toy_pairs", config, tokenizer).metric == "macro_f1"
