"""Every method runs on any Hugging Face encoder: tiny random models of families beyond the BERT,
RoBERTa and DistilBERT used elsewhere, through the path that touches most of a body (META-TARTAN's
masked-LM and classification tasks, saved and reloaded)."""
import math

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from tartan.config import load_config
from tartan.errors import TartanError
from tartan.models.body import max_positions
from tartan.run import train

from helpers import MORE_FAMILIES, read_jsonl, recipe, tiny_overrides


@pytest.mark.parametrize("kind", MORE_FAMILIES)
def test_meta_tartan_trains_saves_and_reloads_each_family(kind, tiny_models, data_dir, tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_models[kind], data_dir, run_dir, **{
        "train.max_steps": 3, "domain.path": "toy_pairs/train.jsonl", "multitask.auxiliary_batch_size": 4,
        "meta.dev_batch_size": 8})
    metrics = train(load_config(recipe("meta_tartan"), overrides))
    assert metrics["stages"]["multitask"]["steps"] == 3
    records = read_jsonl(run_dir / "log.jsonl")
    losses = [record["loss"] for record in records if record.get("stage") == "multitask" and "loss" in record]
    assert losses and all(set(step) == {"toy", "tapt", "dapt"} and all(map(math.isfinite, step.values()))
                          for step in losses)
    saved = AutoModel.from_pretrained(run_dir / "model")
    original = AutoModel.from_pretrained(tiny_models[kind])
    assert saved.config.model_type == original.config.model_type
    changed = [name for name, p in saved.named_parameters()
               if not torch.equal(p, dict(original.named_parameters())[name])]
    assert changed  # the body trained


@pytest.mark.parametrize("kind", ["xlm-roberta", "mpnet", "deberta-v2"])
def test_max_positions_is_the_longest_input_the_body_takes(kind, tiny_models):
    body = AutoModel.from_pretrained(tiny_models[kind]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_models[kind])
    tokenizer.model_max_length = int(1e30)  # as a converted checkpoint without a limit in its tokenizer
    limit = max_positions(body, tokenizer)
    with torch.no_grad():
        body(input_ids=torch.full((1, limit), 7))
        if kind != "deberta-v2":  # relative positions: DeBERTa-v2 would take longer inputs too
            with pytest.raises((IndexError, RuntimeError)):
                body(input_ids=torch.full((1, limit + 1), 7))


def test_debertas_bf16_overflow_names_the_setting_that_avoids_it(tiny_models, data_dir, tmp_path, monkeypatch):
    # DeBERTa (v1) fills its attention mask with float32's minimum (huggingface/transformers#35332)
    model = tiny_models["deberta"]
    monkeypatch.setattr("tartan.training.device.cpu_has_bf16", lambda: True)  # bf16 autocast even where it is emulated
    overrides = tiny_overrides(model, data_dir, tmp_path / "run", **{"train.max_steps": 2, "train.precision": "bf16"})
    with pytest.raises(TartanError, match="overflows under bf16 autocast.*precision=fp32"):
        train(load_config(recipe("finetune"), overrides))
    overrides = tiny_overrides(model, data_dir, tmp_path / "fp32", **{"train.max_steps": 2})
    assert train(load_config(recipe("finetune"), overrides))["stages"]["finetune"]["steps"] == 2
