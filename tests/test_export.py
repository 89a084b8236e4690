import contextlib
import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tartan.cli import main
from tartan.config import load_config
from tartan.data.encoding import encode
from tartan.errors import TartanError
from tartan.export import _CLASSIFIER_LAYOUTS, export_classifier
from tartan.inference import load_finished
from tartan.run import train
from tartan.tasks.classification import logits_of

from conftest import make_tiny_model, tiny_overrides


def finished_run(kind, tiny_models, data_dir, tmp_path):
    model = tiny_models[kind] if kind in tiny_models else make_tiny_model(kind, tmp_path / kind)
    run_dir = tmp_path / f"run-{kind}"
    train(load_config(None, tiny_overrides(model, data_dir, run_dir, **{"train.max_steps": 4})))
    return run_dir


@pytest.mark.parametrize("kind", ["bert", "roberta", "albert", "deberta-v2", "mpnet"])
def test_an_exported_run_scores_as_the_run_does(kind, tiny_models, data_dir, tmp_path):
    run_dir = finished_run(kind, tiny_models, data_dir, tmp_path)
    result = export_classifier(run_dir, tmp_path / "exported")
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "exported").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "exported")
    assert classifier.config.id2label == {0: "Background", 1: "Extends", 2: "Uses"} == dict(enumerate(result["labels"]))

    rows = [json.loads(line) for line in (data_dir / "toy" / "dev.jsonl").read_text().splitlines()]
    texts = [row["text"] for row in rows]
    config, model, run_tokenizer, meta = load_finished(run_dir)
    expected = logits_of(model, "toy", encode(run_tokenizer, texts, None, config.data.max_length),
                         run_tokenizer.pad_token_id, 3, 8, contextlib.nullcontext)
    with torch.no_grad():
        inputs = tokenizer(texts, padding=True, truncation=True, max_length=config.data.max_length, return_tensors="pt")
        logits = classifier(**inputs).logits.numpy()
    assert abs(logits - expected).max() < 1e-4


def test_a_family_whose_classifier_computes_something_else_is_refused(tiny_models, data_dir, tmp_path):
    run_dir = finished_run("distilbert", tiny_models, data_dir, tmp_path)
    with pytest.raises(TartanError, match="cannot export a 'distilbert' run"):
        export_classifier(run_dir, tmp_path / "exported")
    assert not (tmp_path / "exported").exists()


def test_export_on_the_command_line_refuses_a_folder_in_use(tiny_models, data_dir, tmp_path, capsys):
    run_dir = finished_run("bert", tiny_models, data_dir, tmp_path)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    assert main(["export", str(run_dir), str(tmp_path / "used")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["export", str(run_dir), str(tmp_path / "new")]) == 0
    assert "reproduces the run's logits" in capsys.readouterr().err
    assert (tmp_path / "new" / "config.json").is_file()


def test_an_export_that_would_score_otherwise_writes_nothing(tiny_models, data_dir, tmp_path, monkeypatch):
    # DeBERTa's pooler with its default GELU instead of the run's tanh
    monkeypatch.setitem(_CLASSIFIER_LAYOUTS, "deberta-v2", ("pooler.dense", "classifier", {}))
    run_dir = finished_run("deberta-v2", tiny_models, data_dir, tmp_path)
    with pytest.raises(TartanError, match="does not reproduce the run's logits"):
        export_classifier(run_dir, tmp_path / "exported")
    assert not (tmp_path / "exported").exists()
