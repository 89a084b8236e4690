"""The extractive QA task type (SQuAD's layout): reader, windows, loss, SQuAD's exact match and F1,
and runs as an end task and a MUPPET task."""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch

from tartan.config import load_config
from tartan.errors import TartanError
from tartan.tasks import labelled_kind
from tartan.tasks.span import SpanTask, exact_match, f1_score

from helpers import recipe, tiny_overrides, write_jsonl, write_questions


@pytest.fixture()
def questions_dir(data_dir):
    write_questions(data_dir / "qa")
    return data_dir


def task_of(tiny_models, data_dir, max_length=32, **options) -> SpanTask:
    from transformers import AutoTokenizer

    config = load_config(None, [f"model={tiny_models['bert']}", f"data_dir={data_dir}", "end_task=qa",
                                f"data.max_length={max_length}"])
    return SpanTask.from_config("qa", config, AutoTokenizer.from_pretrained(tiny_models["bert"]), **options)


def test_a_folder_of_answers_is_a_span_task(questions_dir):
    assert labelled_kind(questions_dir, "qa") == "span"


def test_an_answer_not_at_its_start_names_its_line(tiny_models, questions_dir):
    path = questions_dir / "qa" / "dev.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[3]["answers"]["answer_start"] = [0]
    write_jsonl(path, rows)
    with pytest.raises(TartanError, match="is not at its answer_start 0") as error:
        task_of(tiny_models, questions_dir)
    assert (error.value.path, error.value.line) == (str(path), 4)


def test_a_question_too_long_for_the_windows_names_its_line_in_training_and_in_predict(tiny_models, questions_dir):
    # max_length 32: 3 special tokens and an overlap of 8 leave 20 tokens for a question at most; the
    # tokenizer itself would panic (training) or raise a bare Exception (predict)
    from pathlib import Path

    from transformers import AutoTokenizer

    from tartan.tasks.span import predict_answers

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    word = next(w for w in ("model", "what", "zeta") if len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1)
    path = questions_dir / "qa" / "dev.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[3]["question"] = " ".join([word] * 20)
    write_jsonl(path, rows)
    task_of(tiny_models, questions_dir)  # 20 fit
    rows[3]["question"] = " ".join([word] * 21)
    write_jsonl(path, rows)
    with pytest.raises(TartanError, match="the question is 21 tokens.*room for 20 at most") as error:
        task_of(tiny_models, questions_dir)
    assert (error.value.path, error.value.line) == (str(path), 4)
    with pytest.raises(TartanError, match="the question is 21 tokens") as error:
        predict_answers(None, "qa", tokenizer, [{"question": rows[3]["question"], "context": "a b", "line": 7}], 32, 8,
                        None, path=Path("in.jsonl"))
    assert (error.value.path, error.value.line) == ("in.jsonl", 7)


def test_long_contexts_are_read_in_windows_whose_positions_point_at_the_answer(tiny_models, questions_dir):
    task = task_of(tiny_models, questions_dir, stride=8)
    windows = task.windows["train"]
    assert len(windows) > len(task.rows["train"])  # some contexts need several windows of 32 tokens
    for window in windows:
        row = task.rows["train"][window["example"]]
        if window["start"]:
            span = row["context"][window["offsets"][window["start"]][0]:window["offsets"][window["end"]][1]]
            assert span == row["answers"][0]
    assert all(any(w["start"] for w in windows if w["example"] == e) for e in range(len(task.rows["train"])))


def test_a_train_fraction_keeps_every_window_of_the_questions_it_keeps(tiny_models, questions_dir):
    from transformers import AutoTokenizer

    config = load_config(None, [f"model={tiny_models['bert']}", f"data_dir={questions_dir}", "end_task=qa",
                                "data.max_length=32", "data.train_fraction=0.5"])
    task = SpanTask.from_config("qa", config, AutoTokenizer.from_pretrained(tiny_models["bert"]))
    kept = sorted(np.concatenate(task.train_batches(0)).tolist())
    questions = {task.windows["train"][i]["example"] for i in kept}
    assert len(questions) == round(len(task.rows["train"]) / 2)
    assert kept == [i for i, w in enumerate(task.windows["train"]) if w["example"] in questions]


def test_squad_exact_match_and_f1():
    assert exact_match("The Cat!", "cat") == 1.0 and exact_match("a cat", "cats") == 0.0
    assert f1_score("the black cat", "black cat sat") == pytest.approx(2 * (2 / 2) * (2 / 3) / (2 / 2 + 2 / 3))
    assert f1_score("", "cat") == 0.0


def test_the_best_span_of_a_window_is_its_answer_when_the_logits_point_there(tiny_models, questions_dir):
    task = task_of(tiny_models, questions_dir, max_length=64)
    index = next(i for i, w in enumerate(task.windows["dev"]) if w["start"])
    window = task.windows["dev"][index]
    logits = np.zeros((len(window["input_ids"]), 2), dtype=np.float32)
    logits[window["start"], 0] = logits[window["end"], 1] = 5.0
    example, _, text = task._best_span("dev", index, logits)
    assert text == task.rows["dev"][example]["answers"][0]
    metrics = task.eval_metrics("dev", [[(example, 10.0, text)]])
    # the other examples have no answer: right only where the gold normalises to nothing ("the")
    expected = [exact_match(text if i == example else "", row["answers"][0]) for i, row in enumerate(task.rows["dev"])]
    assert metrics["exact_match"] == pytest.approx(float(np.mean(expected))) and expected[example] == 1.0


@pytest.mark.parametrize("name, extra", [
    ("finetune", {"end_task": "qa", "train.epochs": 2, "data.max_length": 48}),
    ("muppet", {"muppet.tasks": "[qa,toy_pairs]", "muppet.max_steps": 3, "train.max_steps": 2}),
])
def test_span_runs_as_end_task_and_muppet_task(name, extra, tiny_models, questions_dir, tmp_path):
    from tartan.run import train

    run_dir = tmp_path / "run"
    metrics = train(load_config(recipe(name), tiny_overrides(tiny_models["bert"], questions_dir, run_dir, **extra)))
    if name == "finetune":
        assert metrics["metric"] == "f1" and set(metrics["test"]) == {"f1", "exact_match"}
    else:
        logged = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
        assert any("qa" in r.get("loss", {}) for r in logged)


def test_meta_tartan_with_a_span_auxiliary_task_and_a_span_end_task(tiny_models, questions_dir, tmp_path):
    """The meta head of a span end task trains on every token's vector (padded to max_length)."""
    from tartan.run import train

    for end_task, auxiliary in (("toy", "qa"), ("qa", "toy_pairs")):
        run_dir = tmp_path / end_task
        train(load_config(recipe("meta_tartan"), tiny_overrides(
            tiny_models["bert"], questions_dir, run_dir, end_task=end_task,
            **{"multitask.auxiliary": auxiliary, "train.max_steps": 3, "train.eval_every": 3, "data.max_length": 48})))
        weights = (run_dir / "task_weights.csv").read_text().splitlines()
        assert {line.split(",")[1] for line in weights[1:]} == {end_task, auxiliary}


def test_a_span_run_exports_a_question_answering_model_that_answers_as_the_run(tiny_models, questions_dir, tmp_path):
    """transformers 5 has no question-answering pipeline any more (its migration guide): the
    exported folder is loaded with AutoModelForQuestionAnswering and its tokenizer, as such a
    pipeline would, and its answers to the dev questions are the run's."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from tartan.export import export_classifier
    from tartan.inference import load_finished
    from tartan.run import train

    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_models["bert"], questions_dir, run_dir, end_task="qa",
                               **{"train.max_steps": 3, "data.max_length": 48})
    train(load_config(recipe("finetune"), overrides))
    result = export_classifier(run_dir, tmp_path / "export", "cpu")
    assert result["max_difference"] <= 1e-4
    exported = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "export").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "export")
    config, model, _, _ = load_finished(run_dir, "cpu")
    task = task_of(tiny_models, questions_dir, max_length=48)
    answers = {}
    for index, window in enumerate(task.windows["dev"]):
        ids = torch.from_numpy(window["input_ids"])[None]
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if window["token_type_ids"] is not None:
            inputs["token_type_ids"] = torch.tensor(np.array([window["token_type_ids"]]))
        with torch.no_grad():
            output = exported(**inputs)
            theirs = torch.stack([output.start_logits, output.end_logits], -1)[0].numpy()
            ours = model("qa", inputs)[0].numpy()
        assert task._best_span("dev", index, theirs)[2] == task._best_span("dev", index, ours)[2]
        answers[index] = task._best_span("dev", index, theirs)[2]
    assert tokenizer("what follows zeta?", "alpha zeta omega")["input_ids"][0] == tokenizer.cls_token_id
    assert any(answers.values())  # spans of text, mapped back through the offsets


def has_question_answering_pipeline() -> bool:
    from transformers.pipelines import SUPPORTED_TASKS

    return "question-answering" in SUPPORTED_TASKS


@pytest.mark.skipif(not has_question_answering_pipeline(),
                    reason="transformers 5.3 removed the question-answering pipeline (its migration guide)")
def test_the_span_export_answers_through_the_question_answering_pipeline_as_tartan_predict(
        capsys, tiny_models, questions_dir, tmp_path):
    """For users on a transformers that still has it (4.x up to 5.2): the exported folder loads in
    pipeline("question-answering") and answers each dev question as `tartan predict` does. The
    pipeline allows spans of 15 tokens by default, tartan 30: the pipeline is told 30, and to keep
    spans that start or end inside a word, as tartan does (an untrained model's do). Questions whose
    context takes several windows are left out: the two overlap and rank windows differently."""
    from transformers import AutoTokenizer, pipeline

    from tartan.cli import main

    run_dir = tmp_path / "run"
    assert main(["train", str(recipe("finetune")), *tiny_overrides(
        tiny_models["bert"], questions_dir, run_dir, end_task="qa", **{"train.max_steps": 3, "data.max_length": 80})]) == 0
    assert main(["export", str(run_dir), str(tmp_path / "export")]) == 0
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "export")
    rows = [row for line in (questions_dir / "qa" / "dev.jsonl").read_text().splitlines()
            if len(tokenizer((row := json.loads(line))["question"], row["context"])["input_ids"]) <= 80]
    assert len(rows) >= 5
    inputs = tmp_path / "in.jsonl"
    write_jsonl(inputs, [{"question": r["question"], "context": r["context"]} for r in rows])
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(inputs)]) == 0
    predicted = [json.loads(line)["answer"] for line in capsys.readouterr().out.splitlines()]
    answerer = pipeline("question-answering", model=str(tmp_path / "export"), device="cpu")
    answered = [answerer(question=r["question"], context=r["context"], max_answer_len=30, max_seq_len=80,
                         doc_stride=20, align_to_words=False)["answer"] for r in rows]
    print(f"{len(rows)} questions; pipeline:", answered[:4], "tartan predict:", predicted[:4])
    assert answered == predicted


def test_predict_writes_the_answer_the_run_finds_for_each_question(capsys, tiny_models, questions_dir, tmp_path):
    from tartan.cli import main
    from tartan.inference import load_finished

    run_dir = tmp_path / "run"
    assert main(["train", str(recipe("finetune")), *tiny_overrides(
        tiny_models["bert"], questions_dir, run_dir, end_task="qa", **{"train.max_steps": 3, "data.max_length": 48})]) == 0
    rows = [json.loads(line) for line in (questions_dir / "qa" / "dev.jsonl").read_text().splitlines()]
    inputs = tmp_path / "in.jsonl"
    write_jsonl(inputs, [{"question": r["question"], "context": r["context"]} for r in rows])
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(inputs)]) == 0
    predictions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(predictions) == len(rows) and all(set(p) == {"answer", "score"} for p in predictions)
    assert all(p["answer"] in r["context"] for p, r in zip(predictions, rows))
    # the answers the run's evaluation finds, example by example
    config, model, _, _ = load_finished(run_dir, "cpu")
    task = task_of(tiny_models, questions_dir, max_length=48)
    found = {}
    for _, (example, score, text) in enumerate(task.eval_outputs(model, "dev", range(len(task.eval_batches("dev"))),
                                                                  lambda: torch.autocast("cpu", enabled=False))):
        if example not in found or score > found[example][0]:
            found[example] = (score, text)
    assert [p["answer"] for p in predictions] == [found[i][1] for i in range(len(rows))]


def test_a_context_with_no_token_to_answer_from_scores_null_not_minus_infinity(tiny_models, questions_dir):
    from transformers import AutoTokenizer

    from tartan.models.multitask import MultiTaskModel
    from tartan.models.body import load_body
    from tartan.tasks.span import predict_answers

    body, tokenizer = load_body(str(tiny_models["bert"]))
    task = task_of(tiny_models, questions_dir)
    model = MultiTaskModel(body, {"qa": task.make_head(body)}).eval()
    rows = [{"question": "what", "context": "the model learns", "line": 1},
            {"question": "what", "context": "\x00\x01", "line": 2}]  # no token, though not blank
    answers = predict_answers(model, "qa", tokenizer, rows, 32, 8, contextlib.nullcontext)
    assert answers[1] == {"answer": "", "score": None} and isinstance(answers[0]["score"], float)
    json.loads(json.dumps(answers[1], allow_nan=False))  # strict JSON
