"""tartan predict / eval on a finished run: what is written is what the run's model computes."""
from __future__ import annotations

import io
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tartan.config import load_config
from tartan.inference import evaluate_run, load_finished, predict_file
from tartan.run import train
from tartan.training.metrics import classification_metrics

from helpers import LABELS, MARKERS, make_texts, recipe, tiny_overrides


def finished_run_with_a_spread_head(tiny_models, data_dir, tmp_path, texts: list[str]):
    """A short run whose head is then set to standardise the first-token vectors of `texts` and
    score them with random weights, so that its predictions differ from row to row and a wrong
    reading of the logits shows (a random tiny body's vectors differ too little for its own head)."""
    run_dir = tmp_path / "run"
    train(load_config(recipe("finetune"), tiny_overrides(tiny_models["bert"], data_dir, run_dir, **{"train.max_steps": 2})))
    config, model, tokenizer, _ = load_finished(run_dir)
    with torch.no_grad():
        vectors = torch.stack([model.encode(dict(tokenizer(t, return_tensors="pt")))[0, 0] for t in texts])
    # a floor under the spread: a dimension that hardly varies would otherwise magnify the rounding
    # differences between scoring a text alone and in a padded batch (1e-7) past the tolerance below
    mean, scale = vectors.mean(0), 2 / vectors.std(0).clamp_min(0.05)
    generator = torch.Generator().manual_seed(0)
    head_file = run_dir / "heads" / "toy.safetensors"
    weights = load_file(head_file)
    weights.update({"dense.weight": torch.diag(scale), "dense.bias": -mean * scale,
                    "out_proj.weight": torch.randn(weights["out_proj.weight"].shape, generator=generator) * 3,
                    "out_proj.bias": torch.zeros(weights["out_proj.bias"].shape)})
    save_file(weights, head_file)
    return run_dir


def test_each_prediction_is_the_argmax_of_the_runs_logits_with_its_softmax_probability(tiny_models, data_dir, tmp_path):
    texts = [f"{MARKERS[LABELS[i % 3]]} {text}" for i, text in enumerate(make_texts(24, seed=5))]
    run_dir = finished_run_with_a_spread_head(tiny_models, data_dir, tmp_path, texts)
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = io.StringIO()
    assert predict_file(run_dir, inputs, out) == len(texts)
    predictions = [json.loads(line) for line in out.getvalue().splitlines()]

    config, model, tokenizer, meta = load_finished(run_dir)
    expected = []
    with torch.no_grad():
        for text in texts:  # one text at a time: no padding, no batching to share a mistake with
            encoded = tokenizer(text, truncation=True, max_length=config.data.max_length, return_tensors="pt")
            logits = model(config.end_task, dict(encoded))[0].float()
            probabilities = torch.softmax(logits, -1)
            best = int(logits.argmax())
            expected.append({"label": meta["labels"][best], "probability": float(probabilities[best])})
    assert [p["label"] for p in predictions] == [e["label"] for e in expected]
    assert len({p["label"] for p in predictions}) > 1  # the head's predictions vary
    for prediction, wanted in zip(predictions, expected):
        assert abs(prediction["probability"] - wanted["probability"]) < 1e-4


def test_eval_scores_the_argmax_of_the_runs_logits_against_the_gold_labels(tiny_models, data_dir, tmp_path):
    rows = [json.loads(line) for line in (data_dir / "toy" / "dev.jsonl").read_text().splitlines()]
    run_dir = finished_run_with_a_spread_head(tiny_models, data_dir, tmp_path, [row["text"] for row in rows])
    config, model, tokenizer, meta = load_finished(run_dir)
    predicted, gold = [], []
    with torch.no_grad():
        for row in rows:
            encoded = tokenizer(row["text"], truncation=True, max_length=config.data.max_length, return_tensors="pt")
            predicted.append(int(model(config.end_task, dict(encoded))[0].argmax()))
            gold.append(meta["labels"].index(row["label"]))
    import numpy as np

    expected = classification_metrics(np.array(gold), np.array(predicted))
    scores = evaluate_run(run_dir, "dev")
    assert len(set(predicted)) == 3  # every class predicted somewhere: a wrong reading would show
    for key in ("macro_f1", "micro_f1", "accuracy"):
        assert abs(scores[key] - expected[key]) < 1e-9, key


@pytest.mark.parametrize("name, content, rows, warning", [
    ("inputs.txt", "first text\n\nthird text\n   \nfifth text\n", 3, "skipped 2 blank line(s) (line 2, 4)"),
    ("inputs.TXT", "first text\n\nthird text\n", 2, "skipped 1 blank line(s) (line 2)"),
    # a CSV's empty text keeps its line of output; its blank line is no row, and is said
    ("inputs.csv", 'text\nzeta the model\n""\n\nkappa results\n', 3, "skipped 1 blank line(s) between rows (line 4)"),
])
def test_blank_lines_are_skipped_and_named(name, content, rows, warning, tiny_models, data_dir, tmp_path, capsys):
    """Their predictions would mean nothing, but without a word every later output line would be read
    as the prediction of the input line above it."""
    run_dir = tmp_path / "run"
    train(load_config(recipe("finetune"), tiny_overrides(tiny_models["bert"], data_dir, run_dir, **{"train.max_steps": 1})))
    inputs = tmp_path / name
    inputs.write_text(content)
    capsys.readouterr()
    out = io.StringIO()
    assert predict_file(run_dir, inputs, out) == rows and len(out.getvalue().splitlines()) == rows
    assert f"warning: {inputs}: {warning}" in capsys.readouterr().err


def test_predict_and_eval_refuse_texts_for_a_pair_run_and_pairs_for_a_text_run(tiny_models, data_dir, tmp_path):
    from tartan.errors import TartanError

    pair_run, text_run = tmp_path / "pairs", tmp_path / "texts"
    train(load_config(recipe("finetune"), tiny_overrides(tiny_models["bert"], data_dir, pair_run,
                                                         **{"train.max_steps": 1, "end_task": "toy_pairs"})))
    train(load_config(recipe("finetune"), tiny_overrides(tiny_models["bert"], data_dir, text_run, **{"train.max_steps": 1})))
    assert json.loads((pair_run / "heads" / "toy_pairs.json").read_text())["pairs"] is True
    mixed, alone, paired = tmp_path / "mixed.jsonl", tmp_path / "alone.jsonl", tmp_path / "paired.jsonl"
    mixed.write_text('{"text": "zeta", "text_pair": "uses data"}\n{"text": "kappa"}\n')
    alone.write_text('{"text": "zeta"}\n{"text": "kappa"}\n')
    paired.write_text('{"text": "zeta", "text_pair": "uses data"}\n{"text": "kappa", "text_pair": ""}\n')
    with pytest.raises(TartanError, match="missing field 'text_pair'") as error:
        predict_file(pair_run, mixed, io.StringIO())
    assert (error.value.path, error.value.line) == (str(mixed), 2)
    with pytest.raises(TartanError, match="trained on text pairs .* have none"):
        predict_file(pair_run, alone, io.StringIO())
    with pytest.raises(TartanError, match="trained on texts alone .* have a text_pair"):
        predict_file(text_run, paired, io.StringIO())
    assert predict_file(pair_run, paired, io.StringIO()) == 2 and predict_file(text_run, alone, io.StringIO()) == 2
    # eval on another data folder whose end task lacks the pairs the run trained on
    other = tmp_path / "other"
    (other / "toy_pairs").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        rows = (data_dir / "toy" / f"{split}.jsonl").read_text()
        (other / "toy_pairs" / f"{split}.jsonl").write_text(rows)
    with pytest.raises(TartanError, match="trained on text pairs"):
        evaluate_run(pair_run, "test", data_dir=str(other))
