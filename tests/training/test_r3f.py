"""R3F on a tiny model: nothing with eps 0, positive with noise, and its gradient reaches the body;
the noise as wide as the embeddings, and the divergence over the distributions each task type holds."""
from __future__ import annotations

import pytest
import torch

from tartan.training.r3f import r3f_penalty, symmetric_kl


def test_symmetric_kl_is_zero_for_equal_and_positive_for_different_predictions():
    logits = torch.randn(4, 3)
    assert symmetric_kl(logits, logits).item() == 0
    assert symmetric_kl(logits, logits + torch.randn(4, 3)).item() > 0


def test_symmetric_kl_is_both_directions_summed():
    clean, noisy = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 0.5]])
    p, q = clean.softmax(-1), noisy.softmax(-1)
    both = (p * (p / q).log()).sum() + (q * (q / p).log()).sum()
    assert symmetric_kl(clean, noisy).item() == pytest.approx(both.item(), rel=1e-5)
    assert symmetric_kl(noisy, clean).item() == pytest.approx(both.item(), rel=1e-5)
    assert (p * (p / q).log()).sum().item() != pytest.approx(both.item(), rel=1e-2)  # one direction is not enough


def test_r3f_penalty(multitask_setup):
    task, model = multitask_setup
    model.eval()  # no dropout: the clean and noisy passes differ by the noise alone
    batch = task.collate("train", task.train_batches(0)[0])
    clean = model.heads["toy"](model.encode(batch), batch)
    assert r3f_penalty(model, task, batch, clean, eps=0.0).item() == 0
    for noise in ("uniform", "normal"):
        torch.manual_seed(0)
        penalty = r3f_penalty(model, task, batch, clean, eps=0.5, noise=noise)
        assert penalty.item() > 0
    model.zero_grad()
    penalty.backward()
    grads = [p.grad for p in model.body.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("noise", ["uniform", "normal"])
def test_r3f_penalty_is_lambda_times_the_symmetric_kl_of_the_seeded_noisy_pass(noise, multitask_setup):
    task, model = multitask_setup
    model.eval()
    batch = task.collate("train", task.train_batches(0)[0])
    clean = model.heads["toy"](model.encode(batch), batch)
    torch.manual_seed(11)
    penalty = r3f_penalty(model, task, batch, clean, eps=0.3, noise=noise, weight=2.5)

    # the same noise drawn by hand from the same seed: uniform in [-eps, eps], or normal times eps
    torch.manual_seed(11)
    shape = (*batch["input_ids"].shape, model.body.config.hidden_size)
    drawn = torch.empty(shape).uniform_(-0.3, 0.3) if noise == "uniform" else torch.randn(shape) * 0.3
    if noise == "uniform":
        assert drawn.abs().max() <= 0.3 and drawn.abs().max() > 0.25
    embeddings = model.body.get_input_embeddings()(batch["input_ids"]) + drawn
    types = {k: v for k, v in batch.items() if k == "token_type_ids"}
    hidden = model.body(inputs_embeds=embeddings, attention_mask=batch["attention_mask"], **types).last_hidden_state
    noisy = model.heads["toy"](hidden, batch)
    p, q = clean.double().softmax(-1), noisy.double().softmax(-1)
    per_row = (p * (p / q).log()).sum(-1) + (q * (q / p).log()).sum(-1)
    assert penalty.item() == pytest.approx(2.5 * per_row.mean().item(), rel=1e-4)
    assert penalty.item() > 1e-4


def test_r3f_noise_is_as_wide_as_the_embeddings_of_a_body_that_projects_them(tiny_models, data_dir):
    # ALBERT's and ELECTRA's embeddings (16 wide here) are projected up to the hidden size (32)
    from helpers import build_multitask

    _, task, model = build_multitask(tiny_models["albert"], data_dir)
    assert model.body.get_input_embeddings().embedding_dim != model.body.config.hidden_size
    batch = task.collate("train", task.train_batches(0)[0])
    clean = model.heads["toy"](model.encode(batch), batch)
    assert r3f_penalty(model, task, batch, clean, eps=0.5).item() > 0


class _Span:  # what R3F reads of the span task: its distributions (tartan.tasks.span.SpanTask's own)
    from tartan.tasks.span import SpanTask
    prediction_logits = SpanTask.prediction_logits


def test_a_span_output_is_compared_as_a_start_and_an_end_distribution_over_the_unpadded_tokens():
    torch.manual_seed(0)
    clean = torch.randn(2, 10, 2)  # rows x tokens x (start, end)
    batch = {"attention_mask": torch.tensor([[1] * 10, [1] * 6 + [0] * 4])}
    start, end = _Span().prediction_logits(clean, batch)
    shifted = clean.clone()
    shifted[..., 0] += 5  # the start's distribution over the tokens is unchanged
    assert [symmetric_kl(a, b).item() for a, b in zip((start, end), _Span().prediction_logits(shifted, batch))] == \
        pytest.approx([0, 0], abs=1e-5)
    padding = clean.clone()
    padding[1, 6:] = 50.0  # padding is no position
    assert symmetric_kl(start, _Span().prediction_logits(padding, batch)[0]).item() == pytest.approx(0, abs=1e-5)
    moved = clean.clone()
    moved[0, 3, 1] += 4.0  # one row's end moves
    assert symmetric_kl(end, _Span().prediction_logits(moved, batch)[1]).item() > 0.1


def test_a_regression_task_has_no_r3f_penalty_and_no_noisy_pass(monkeypatch, multitask_setup):
    from tartan.tasks.regression import RegressionTask

    task, model = multitask_setup
    batch = task.collate("train", task.train_batches(0)[0])
    clean = model.heads["toy"](model.encode(batch), batch)
    monkeypatch.setattr(task, "prediction_logits", RegressionTask.prediction_logits.__get__(task))
    monkeypatch.setattr(model, "encode", lambda *a, **k: pytest.fail("a noisy pass for a task without distributions"))
    assert r3f_penalty(model, task, batch, clean, eps=0.5) is None
