"""The regression task type (STS-B's family): its reader, loss, metrics, and a run of every kind a
task takes part in: end task, labelled auxiliary task, predictions."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from tartan.cli import main
from tartan.config import load_config
from tartan.errors import TartanError
from tartan.tasks import labelled_kind
from tartan.tasks.regression import RegressionTask

from helpers import make_texts, recipe, tiny_overrides, write_jsonl

MARKERS = {0.0: "alpha", 2.5: "gamma", 5.0: "omega"}


def write_scores(folder: Path, sizes=(48, 16, 16), seed: int = 0) -> Path:
    """A task folder of sentence pairs whose score (0, 2.5 or 5, as a JSON number) is learnable from
    its marker word."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, size in zip(("train", "dev", "test"), sizes):
        rows = []
        for i, text in enumerate(make_texts(size, seed=seed * 100 + len(split))):
            score = list(MARKERS)[i % 3]
            rows.append({"text": f"{MARKERS[score]} {text}", "text_pair": " ".join(text.split()[:3]) or "pair",
                         "label": score + rng.choice((0.0, 0.1))})
        write_jsonl(folder / f"{split}.jsonl", rows)
    return folder


@pytest.fixture()
def scores_dir(data_dir) -> Path:
    write_scores(data_dir / "scores")
    return data_dir


def task_of(tiny_models, data_dir, name="scores", **options) -> RegressionTask:
    from transformers import AutoTokenizer

    config = load_config(None, [f"model={tiny_models['bert']}", f"data_dir={data_dir}", f"end_task={name}",
                                "data.max_length=32"])
    return RegressionTask.from_config(name, config, AutoTokenizer.from_pretrained(tiny_models["bert"]), **options)


def test_a_folder_of_scores_is_a_regression_task_and_of_names_a_classification(scores_dir):
    assert labelled_kind(scores_dir, "scores") == "regression"
    assert labelled_kind(scores_dir, "toy") == "classification"


def test_integer_scores_read_as_classes_unless_tasks_name_type_says_regression(scores_dir):
    from helpers import read_jsonl, write_jsonl
    from tartan.errors import TartanError
    from tartan.tasks import task_kind

    for split in ("train", "dev", "test"):  # 0 to 5 as integers: class names, to a reader of the data
        path = scores_dir / "scores" / f"{split}.jsonl"
        write_jsonl(path, [{**row, "label": round(row["label"])} for row in read_jsonl(path)])
    base = [f"data_dir={scores_dir}", "end_task=scores"]
    assert task_kind(load_config(None, base), "scores") == "classification"
    assert task_kind(load_config(None, [*base, "tasks.scores.type=regression"]), "scores") == "regression"
    assert task_kind(load_config(None, [*base, "tasks.scores.type=regression"]), "toy") == "classification"
    with pytest.raises(TartanError, match="tasks.scores.type must be one of classification, .*got 'scores'"):
        task_kind(load_config(None, [*base, "tasks.scores.type=scores"]), "scores")


@pytest.mark.parametrize("bad, needle", [("high", "must be a number"), (True, "must be a number"),
                                         (float("nan"), "must be a number")])
def test_a_score_that_is_not_a_number_names_its_line(bad, needle, tiny_models, scores_dir):
    path = scores_dir / "scores" / "dev.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[2]["label"] = bad
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # NaN as JSON's NaN
    with pytest.raises(TartanError, match=needle) as error:
        task_of(tiny_models, scores_dir)
    assert (error.value.path, error.value.line) == (str(path), 3)


def test_the_loss_is_the_mean_squared_error_scaled_by_the_train_variance(tiny_models, scores_dir):
    task = task_of(tiny_models, scores_dir, scale_loss=True)
    batch = task.collate("train", np.arange(6))
    output = torch.linspace(0, 5, 6).reshape(6, 1)
    expected = float(((output[:, 0] - batch["labels"]) ** 2).mean()) / float(np.var(task.labels["train"]))
    assert batch["labels"].dtype == torch.float32
    assert float(task.loss(output, batch)) == pytest.approx(expected, rel=1e-5)
    # predicting the train mean costs 1
    mean = torch.full((len(task.labels["train"]), 1), float(task.labels["train"].mean()))
    every = task.collate("train", np.arange(len(task.labels["train"])))
    assert float(task.loss(mean, every)) == pytest.approx(1.0, rel=1e-4)


def test_metrics_are_pearson_and_spearman_of_the_scores(tiny_models, scores_dir):
    task = task_of(tiny_models, scores_dir)
    gold = task.labels["dev"]
    predicted = gold + np.random.default_rng(0).normal(0, 1.5, len(gold)).astype(np.float32)
    metrics = task.eval_metrics("dev", [(np.arange(len(gold)), predicted[:, None])])
    assert metrics["pearson"] == pytest.approx(stats.pearsonr(predicted, gold)[0], rel=1e-6)
    assert metrics["spearman"] == pytest.approx(stats.spearmanr(predicted, gold)[0], rel=1e-6)
    assert metrics["loss"] == pytest.approx(float(np.mean((predicted - gold) ** 2)), rel=1e-5)
    assert task.metric == "pearson" and 0 < metrics["pearson"] < 1


def test_a_regression_end_task_trains_selects_on_pearson_and_predicts_scores(capsys, tiny_models, scores_dir,
                                                                             tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_models["bert"], scores_dir, run_dir, end_task="scores",
                               **{"train.epochs": 3, "train.lr_body": 1e-3})
    assert main(["train", str(recipe("finetune")), *overrides]) == 0
    out = capsys.readouterr().out
    assert "| split | pearson | spearman | loss |" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["metric"] == "pearson" and set(metrics["test"]) == {"pearson", "spearman", "loss"}
    inputs = tmp_path / "in.jsonl"
    write_jsonl(inputs, [{"text": "omega zeta the model", "text_pair": "zeta"}, {"text": "alpha zeta", "text_pair": "x"}])
    assert main(["predict", str(run_dir), str(inputs)]) == 0
    predictions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [set(p) for p in predictions] == [{"score"}, {"score"}]
    assert main(["eval", str(run_dir), "--split", "dev"]) == 0
    assert "pearson" in capsys.readouterr().out


def test_the_metric_must_be_one_the_end_tasks_type_computes(tiny_models, scores_dir, tmp_path):
    from helpers import write_choices
    from tartan.run import train

    write_choices(scores_dir / "choices")
    for end_task, metric in (("scores", "macro_f1"), ("choices", "micro_f1")):
        run_dir = tmp_path / end_task
        overrides = tiny_overrides(tiny_models["bert"], scores_dir, run_dir, end_task=end_task, metric=metric)
        with pytest.raises(TartanError, match=f"metric={metric}: end task {end_task!r} .* is scored by") as error:
            train(load_config(recipe("finetune"), overrides))
        assert "\n" not in str(error.value) and not run_dir.exists()  # before anything is written
    run_dir = tmp_path / "spearman"  # regression may select on Spearman's correlation
    train(load_config(recipe("finetune"), tiny_overrides(tiny_models["bert"], scores_dir, run_dir, end_task="scores",
                                                         metric="spearman", **{"train.max_steps": 2})))
    assert json.loads((run_dir / "metrics.json").read_text())["metric"] == "spearman"


def test_a_regression_task_is_a_labelled_auxiliary_task(tiny_models, scores_dir, tmp_path):
    from tartan.run import train

    run_dir = tmp_path / "run"
    train(load_config(recipe("mt_tartan"), tiny_overrides(tiny_models["bert"], scores_dir, run_dir,
                                                          **{"multitask.auxiliary": "scores", "train.max_steps": 3,
                                                             "multitask.scale_loss": "true"})))
    assert json.loads((run_dir / "heads" / "scores.json").read_text())["type"] == "regression"
    logged = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert any("scores" in r.get("loss", {}) for r in logged)


def test_a_regression_run_exports_as_a_one_output_sequence_model_that_scores_as_the_run(tiny_models, scores_dir,
                                                                                         tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tartan.export import export_classifier
    from tartan.inference import load_finished
    from tartan.run import train

    run_dir = tmp_path / "run"
    train(load_config(recipe("finetune"), tiny_overrides(tiny_models["bert"], scores_dir, run_dir, end_task="scores",
                                                         **{"train.max_steps": 3})))
    export_classifier(run_dir, tmp_path / "export", "cpu")
    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "export").eval()
    assert exported.config.num_labels == 1 and exported.config.problem_type == "regression"
    config, model, tokenizer, _ = load_finished(run_dir, "cpu")
    inputs = AutoTokenizer.from_pretrained(tmp_path / "export")("omega zeta the model", "zeta", return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(exported(**inputs).logits, model("scores", dict(inputs)), atol=1e-5)
