"""Evaluation shared out between processes (training/evaluation.py): each process scores its share
of the batches, and the metrics computed once on everything gathered are the one-process figures."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from tartan.config import load_config
from tartan.models.multitask import MultiTaskModel
from tartan.tasks.mlm import MaskedLMTask
from tartan.training import evaluation

from helpers import build_multitask


def no_autocast():
    return torch.autocast("cpu", enabled=False)


def shared_out(task, model, split: str, world: int, monkeypatch) -> tuple[dict, list[list[int]]]:
    """What `evaluation.evaluate` returns in the main process of `world`, every other process's
    share computed here as that process would; and the batches each process scored."""
    scored = []
    eval_outputs = task.eval_outputs

    def recording(model_, split_, numbers, autocast):
        scored.append(list(numbers))
        return eval_outputs(model_, split_, numbers, autocast)

    monkeypatch.setattr(task, "eval_outputs", recording)
    count = len(task.eval_batches(split))
    others = [recording(model, split, list(range(count))[rank::world], no_autocast) for rank in range(1, world)]
    monkeypatch.setattr(evaluation, "gathered", lambda mine, accelerator: [mine, *others])
    monkeypatch.setattr(evaluation, "decided_by_main", lambda value, accelerator: value)
    main = SimpleNamespace(process_index=0, num_processes=world, is_main_process=True, autocast=no_autocast)
    return evaluation.evaluate(task, model, split, main), scored


@pytest.mark.parametrize("world", [2, 3])
def test_a_classification_split_scored_in_shares_gives_the_one_process_metrics(world, tiny_models, data_dir,
                                                                               monkeypatch):
    _, task, model = build_multitask(tiny_models["bert"], data_dir, batch_size=8)
    task.eval_batch_size = 3  # 16 dev examples: 6 batches
    whole = task.evaluate(model, "dev", no_autocast)
    metrics, scored = shared_out(task, model, "dev", world, monkeypatch)
    assert metrics == pytest.approx(whole, abs=1e-6)
    # every batch scored once, by one process
    assert sorted(k for share in scored for k in share) == list(range(6)) and all(len(s) < 6 for s in scored)


def test_a_masked_lm_split_scored_in_shares_gives_the_one_process_metrics(tiny_models, data_dir, monkeypatch):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    config = load_config(None, [f"model={tiny_models['bert']}", f"data_dir={data_dir}", "end_task=toy",
                                "data.max_length=32", "mlm.heldout=0.25", "pretrain.eval_batch_size=3"])
    task = MaskedLMTask.from_config("tapt", config, tokenizer, source="task")
    body = AutoModel.from_pretrained(tiny_models["bert"])
    model = MultiTaskModel(body, {"tapt": task.make_head(body)})
    whole = task.evaluate(model, "dev", no_autocast)
    metrics, scored = shared_out(task, model, "dev", 2, monkeypatch)
    assert len(task.eval_batches("dev")) > 2 and all(scored)
    assert metrics == pytest.approx(whole, rel=1e-6)
