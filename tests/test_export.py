import contextlib

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tartan.cli import main
from tartan.config import load_config
from tartan.data.encoding import encode
from tartan.errors import TartanError
from tartan.export import _CLASSIFIER_LAYOUTS, build_classifier, export_classifier, max_difference
from tartan.inference import load_finished
from tartan.models.heads import ClassificationHead
from tartan.models.multitask import MultiTaskModel
from tartan.run import train
from tartan.tasks.classification import logits_of

from helpers import custom_code_model, read_jsonl, tiny_overrides


def finished_run(kind, tiny_models, data_dir, tmp_path, end_task="toy"):
    run_dir = tmp_path / f"run-{kind}"
    train(load_config(None, tiny_overrides(tiny_models[kind], data_dir, run_dir, **{"train.max_steps": 4, "end_task": end_task})))
    return run_dir


@pytest.mark.parametrize("kind, end_task", [("bert", "toy"), ("bert", "toy_pairs"), ("roberta", "toy"),
                                           ("albert", "toy"), ("deberta-v2", "toy_pairs"), ("mpnet", "toy")])
def test_an_exported_run_scores_as_the_run_does(kind, end_task, tiny_models, data_dir, tmp_path):
    run_dir = finished_run(kind, tiny_models, data_dir, tmp_path, end_task)
    result = export_classifier(run_dir, tmp_path / "exported")
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "exported").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "exported")
    assert classifier.config.id2label == {0: "Background", 1: "Extends", 2: "Uses"} == dict(enumerate(result["labels"]))

    rows = read_jsonl(data_dir / end_task / "dev.jsonl")
    texts, pairs = [row["text"] for row in rows], [row["text_pair"] for row in rows] if "pairs" in end_task else None
    config, model, run_tokenizer, meta = load_finished(run_dir)
    expected = logits_of(model, end_task, encode(run_tokenizer, texts, pairs, config.data.max_length),
                         run_tokenizer.pad_token_id, 3, 8, contextlib.nullcontext)
    with torch.no_grad():
        inputs = tokenizer(texts, pairs, padding=True, truncation=True, max_length=config.data.max_length,
                           return_tensors="pt")
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
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert main(["export", str(run_dir), str(tmp_path / "new")]) == 0
    assert "BertForSequenceClassification, labels " in capsys.readouterr().err
    assert (tmp_path / "new" / "config.json").is_file()


def test_an_export_that_would_score_otherwise_writes_nothing(tiny_models, data_dir, tmp_path, monkeypatch):
    # DeBERTa's pooler with its default GELU instead of the run's tanh
    monkeypatch.setitem(_CLASSIFIER_LAYOUTS, "deberta-v2", ("pooler.dense", "classifier", {}))
    run_dir = finished_run("deberta-v2", tiny_models, data_dir, tmp_path)
    with pytest.raises(TartanError, match="does not reproduce the run's logits"):
        export_classifier(run_dir, tmp_path / "exported")
    assert not (tmp_path / "exported").exists()


TINY = dict(vocab_size=99, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            pad_token_id=1, max_position_embeddings=40)


@pytest.mark.parametrize("model_type", sorted(_CLASSIFIER_LAYOUTS))
def test_every_exportable_family_computes_the_runs_head(model_type, tmp_path):
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(0)
    extra = {"pooler_hidden_size": 8} if model_type.startswith("deberta") else {}  # the export must set it back
    body = AutoModel.from_config(AutoConfig.for_model(model_type, **TINY, **extra))
    body.save_pretrained(tmp_path / "body")
    head = ClassificationHead(16, 3)
    classifier = build_classifier(tmp_path / "body", head, ["a", "b", "c"])
    model = MultiTaskModel(AutoModel.from_pretrained(tmp_path / "body"), {"task": head})
    input_ids = torch.randint(5, 99, (2, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    inputs = [{"input_ids": input_ids, "attention_mask": attention_mask}]
    assert max_difference(model, "task", classifier, inputs) < 1e-5
    # and a head of other weights is told apart
    assert max_difference(model, "task", build_classifier(tmp_path / "body", ClassificationHead(16, 3), list("abc")),
                          inputs) > 1e-3


def test_an_output_that_is_a_file_is_refused(tiny_models, data_dir, tmp_path):
    run_dir = finished_run("bert", tiny_models, data_dir, tmp_path)
    (tmp_path / "out").write_text("mine")
    with pytest.raises(TartanError, match="exists and is not an empty folder"):
        export_classifier(run_dir, tmp_path / "out")
    assert (tmp_path / "out").read_text() == "mine"


def test_a_run_of_a_model_with_code_of_its_own_is_refused(tiny_models, data_dir, tmp_path):
    model = custom_code_model(tiny_models, tmp_path / "custom")
    run_dir = tmp_path / "run"
    train(load_config(None, tiny_overrides(model, data_dir, run_dir, **{"train.max_steps": 2, "trust_remote_code": "true"})))
    with pytest.raises(TartanError, match="ships its own code"):
        export_classifier(run_dir, tmp_path / "exported")
