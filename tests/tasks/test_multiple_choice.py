"""The multiple-choice task type (CommonsenseQA, COPA): its reader, head, ranking loss and accuracy,
and runs as an end task, a labelled auxiliary task (META-TARTAN) and a MUPPET task."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tartan.config import load_config
from tartan.errors import TartanError
from tartan.tasks import labelled_kind
from tartan.tasks.multiple_choice import MultipleChoiceTask

from helpers import recipe, tiny_overrides, write_choices, write_jsonl


@pytest.fixture()
def choices_dir(data_dir) -> Path:
    write_choices(data_dir / "choose", question=True)
    return data_dir


def task_of(tiny_models, data_dir, name="choose", **options) -> MultipleChoiceTask:
    from transformers import AutoTokenizer

    config = load_config(None, [f"model={tiny_models['bert']}", f"data_dir={data_dir}", f"end_task={name}",
                                "data.max_length=32"])
    return MultipleChoiceTask.from_config(name, config, AutoTokenizer.from_pretrained(tiny_models["bert"]), **options)


def test_a_folder_with_choices_is_a_multiple_choice_task(choices_dir):
    assert labelled_kind(choices_dir, "choose") == "multiple_choice"


@pytest.mark.parametrize("edit, needle", [
    (lambda row: {**row, "label": 3}, "index of a choice (0 to 2)"),
    (lambda row: {**row, "choices": row["choices"][:2]}, "2 choices where the task's rows have 3"),
    (lambda row: {**row, "choices": ["a", ""]}, "at least two non-empty strings"),
    (lambda row: {**row, "context": " "}, "'context' must be a non-empty string"),
])
def test_bad_rows_name_their_line(edit, needle, tiny_models, choices_dir):
    path = choices_dir / "choose" / "dev.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[4] = edit(rows[4])
    write_jsonl(path, rows)
    with pytest.raises(TartanError, match=re.escape(needle)) as error:
        task_of(tiny_models, choices_dir)
    assert (error.value.path, error.value.line) == (str(path), 5)


def test_each_choice_is_read_with_its_context_and_the_loss_ranks_a_rows_choices(tiny_models, choices_dir):
    from transformers import AutoModel

    from tartan.models.multitask import MultiTaskModel

    task = task_of(tiny_models, choices_dir, scale_loss=True)
    batch = task.collate("train", np.array([2, 0]))
    assert batch["input_ids"].shape[0] == 2 * 3 and torch.equal(batch["labels"], torch.from_numpy(task.labels["train"][[2, 0]]))
    body = AutoModel.from_pretrained(tiny_models["bert"])
    model = MultiTaskModel(body, {"choose": task.make_head(body)}).eval()
    with torch.no_grad():
        scores = model("choose", batch)
    assert scores.shape == (2, 3)
    expected = torch.nn.functional.cross_entropy(scores, batch["labels"]) / np.log(3)
    assert float(task.loss(scores, batch)) == pytest.approx(float(expected), rel=1e-5)
    # the head scores the first-token vectors alone as it scores the whole output (META's view)
    with torch.no_grad():
        features, labels = task.head_view(model.encode(batch), batch)
        assert features.shape[:2] == (2, 3)
        assert torch.allclose(model.heads["choose"](features, labels), scores, atol=1e-6)


def test_accuracy_is_the_share_of_rows_whose_best_score_is_the_right_choice(tiny_models, choices_dir):
    task = task_of(tiny_models, choices_dir)
    gold = task.labels["dev"]
    scores = np.zeros((len(gold), 3), dtype=np.float32)
    scores[np.arange(len(gold)), gold] = 1.0
    scores[:4] = 0.0
    scores[np.arange(4), (gold[:4] + 1) % 3] = 1.0  # 4 wrong
    metrics = task.eval_metrics("dev", [(np.arange(len(gold)), scores)])
    assert metrics["accuracy"] == pytest.approx((len(gold) - 4) / len(gold))


@pytest.mark.parametrize("name, extra", [
    ("finetune", {"end_task": "choose", "train.epochs": 2}),
    ("meta_tartan", {"multitask.auxiliary": "choose", "train.max_steps": 3}),
    ("muppet", {"muppet.tasks": "[choose,toy_pairs]", "muppet.max_steps": 3, "train.max_steps": 2}),
])
def test_multiple_choice_runs_as_end_task_auxiliary_and_muppet_task(name, extra, tiny_models, choices_dir, tmp_path):
    from tartan.run import train

    run_dir = tmp_path / "run"
    metrics = train(load_config(recipe(name), tiny_overrides(tiny_models["bert"], choices_dir, run_dir, **extra)))
    if name == "finetune":
        assert metrics["metric"] == "accuracy" and set(metrics["test"]) == {"accuracy", "loss"}
        assert json.loads((run_dir / "heads" / "choose.json").read_text())["type"] == "multiple_choice"
    else:
        logged = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
        assert any("choose" in r.get("loss", {}) for r in logged)


def test_meta_tartan_with_a_multiple_choice_end_task_and_its_own_text(tiny_models, choices_dir, tmp_path):
    """TAPT reads the rows' contexts and choices as text; the meta head trains on the gathered
    first-token vectors of every choice."""
    from tartan.run import train

    run_dir = tmp_path / "run"
    metrics = train(load_config(recipe("meta_tartan"), tiny_overrides(
        tiny_models["bert"], choices_dir, run_dir, end_task="choose",
        **{"multitask.auxiliary": "tapt", "train.max_steps": 3, "train.eval_every": 3})))
    assert metrics["metric"] == "accuracy"
    weights = (run_dir / "task_weights.csv").read_text().splitlines()
    assert {line.split(",")[1] for line in weights[1:]} == {"choose", "tapt"}


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_a_multiple_choice_run_exports_a_multiple_choice_model_that_scores_as_the_run(kind, tiny_models, choices_dir,
                                                                                      tmp_path):
    from transformers import AutoModelForMultipleChoice

    from tartan.export import export_classifier
    from tartan.inference import load_finished
    from tartan.run import train

    run_dir = tmp_path / "run"
    train(load_config(recipe("finetune"), tiny_overrides(tiny_models[kind], choices_dir, run_dir, end_task="choose",
                                                         **{"train.max_steps": 3})))
    result = export_classifier(run_dir, tmp_path / "export", "cpu")
    assert result["max_difference"] <= 1e-4
    exported = AutoModelForMultipleChoice.from_pretrained(tmp_path / "export").eval()
    config, model, _, _ = load_finished(run_dir, "cpu")
    task = task_of(tiny_models, choices_dir)
    batch = task.collate("dev", np.arange(4))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        theirs = exported(**{k: v.view(4, 3, -1) for k, v in inputs.items()}).logits
        assert torch.allclose(theirs, model("choose", inputs), atol=1e-4)


def test_predict_writes_each_rows_best_choice_as_the_run_scores_it(capsys, tiny_models, choices_dir, tmp_path):
    from tartan.cli import main
    from tartan.inference import load_finished

    run_dir = tmp_path / "run"
    assert main(["train", str(recipe("finetune")), *tiny_overrides(tiny_models["bert"], choices_dir, run_dir,
                                                                   end_task="choose", **{"train.max_steps": 3})]) == 0
    rows = [json.loads(line) for line in (choices_dir / "choose" / "dev.jsonl").read_text().splitlines()]
    inputs = tmp_path / "in.jsonl"
    write_jsonl(inputs, [{k: v for k, v in r.items() if k != "label"} for r in rows])
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(inputs)]) == 0
    predictions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    config, model, _, _ = load_finished(run_dir, "cpu")
    task = task_of(tiny_models, choices_dir)
    with torch.no_grad():
        scores = model("choose", task.collate("dev", np.arange(len(rows))))
    probabilities = torch.softmax(scores, -1)
    assert [p["choice"] for p in predictions] == scores.argmax(-1).tolist()
    assert [p["probability"] for p in predictions] == pytest.approx(probabilities.max(-1).values.tolist(), abs=1e-4)
