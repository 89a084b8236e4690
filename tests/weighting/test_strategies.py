"""The weighting strategies on a tiny model: what each leaves in .grad and how the learned weights move."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tartan.training.device import make_accelerator
from tartan.weighting import StepInputs, strategies

from helpers import build_multitask, doubling_all_reduce


@pytest.fixture()
def setup(tiny_models, data_dir):
    """The toy end task, a body without dropout with its head and two spare heads, so that gradients
    are exact functions of the batches. fp32: accelerate's state is global to the process, and a bare
    Accelerator() would inherit the bf16 autocast of whichever run came before."""
    _, task, model = build_multitask(tiny_models["bert"], data_dir, heads=("toy", "aligned", "opposed"),
                                    batch_size=16)
    return task, model.eval(), make_accelerator("fp32")


def step_inputs(task, model, accelerator, step=0):
    train = task.collate("train", task.train_batches(0)[0])
    dev = task.collate("dev", np.arange(task.num_examples("dev")))
    hidden = model.encode(train)
    train_loss = task.loss(model.heads["toy"](hidden, train), train)
    # an auxiliary loss whose body gradient is the dev gradient through the end task's head, and one
    # whose gradient is its opposite
    def dev_loss():  # a graph of its own for each task, as every task has in training
        return task.loss(model.heads["toy"](model.encode(dev), dev), dev)

    losses = {"toy": train_loss, "aligned": dev_loss(), "opposed": -dev_loss()}
    inputs = StepInputs(step, model, {"toy": task}, {"toy": train}, {"toy": hidden.detach()}, accelerator)
    return losses, inputs


def body_grad(model) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.body.parameters()])


def test_static_update_equals_autograd_of_the_weighted_sum(setup):
    task, model, accelerator = setup
    losses, inputs = step_inputs(task, model, accelerator)
    expected = torch.autograd.grad(0.5 * losses["toy"] + 0.25 * losses["aligned"] + 0.25 * losses["opposed"],
                                   list(model.parameters()), retain_graph=True, allow_unused=True)
    strategy = strategies.get("static")(["toy", "aligned", "opposed"], "toy", weights={"toy": 2})
    weights = strategy.backward(losses, inputs)
    assert weights == {"toy": 0.5, "aligned": 0.25, "opposed": 0.25}
    for p, g in zip(model.parameters(), expected):
        assert (p.grad is None and g is None) or torch.allclose(p.grad, g, atol=1e-6)


@pytest.mark.parametrize("head", ["same", "separate"])
def test_meta_raises_the_task_along_the_dev_gradient_and_lowers_the_one_against_it(head, setup):
    task, model, accelerator = setup
    strategy = strategies.get("meta")(["toy", "aligned", "opposed"], "toy", lr=0.1, head=head, dev_batch_size=16)
    for step in range(3):
        losses, inputs = step_inputs(task, model, accelerator, step)
        weights = strategy.backward(losses, inputs)
        assert all(w > 0 for w in weights.values()) and sum(weights.values()) == pytest.approx(1)
        model.zero_grad(set_to_none=True)
    assert weights["aligned"] > 1 / 3 > weights["opposed"]
    if head == "same":
        # the dev gradient is exactly the aligned task's gradient here
        assert strategy.cosines["aligned"] == pytest.approx(1, abs=1e-4)
        assert strategy.cosines["opposed"] == pytest.approx(-1, abs=1e-4)


def test_meta_body_update_mixes_task_gradients_and_heads_step_on_their_own(setup):
    task, model, accelerator = setup
    strategy = strategies.get("meta")(["toy", "aligned", "opposed"], "toy", lr=0.5, dev_batch_size=16)
    losses, inputs = step_inputs(task, model, accelerator)
    body = list(model.body.parameters())
    per_task = {n: torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, body, retain_graph=True)])
                for n, loss in losses.items()}
    own_head = torch.autograd.grad(losses["toy"], list(model.heads["toy"].parameters()), retain_graph=True)
    head_before = [p.detach().clone() for p in model.heads["toy"].parameters()]
    weights = strategy.backward(losses, inputs)
    assert weights != {"toy": 1 / 3, "aligned": 1 / 3, "opposed": 1 / 3}  # the step's own update is used
    mixed = sum(weights[n] * g for n, g in per_task.items())
    assert torch.allclose(body_grad(model), mixed, atol=1e-5)
    # the meta head trained beside the end task's head never touched it: unchanged weights, and a
    # gradient that is its own task's, unweighted
    for p, before, g in zip(model.heads["toy"].parameters(), head_before, own_head):
        assert torch.equal(p.detach(), before) and torch.allclose(p.grad, g, atol=1e-6)


def test_same_head_ablation_takes_the_dev_gradient_through_the_end_task_head(setup):
    task, model, accelerator = setup
    body = list(model.body.parameters())
    dev = task.collate("dev", np.arange(task.num_examples("dev")))
    through_end_head = torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        task.loss(model.heads["toy"](model.encode(dev), dev), dev), body)])
    gradients = {}
    for head in ("same", "separate"):
        strategy = strategies.get("meta")(["toy"], "toy", head=head, dev_batch_size=16)
        _, inputs = step_inputs(task, model, accelerator)
        gradients[head] = strategy.dev_gradient(inputs, body)
    assert torch.allclose(gradients["same"], through_end_head, atol=1e-6)
    assert not torch.allclose(gradients["separate"], through_end_head, atol=1e-3)


def test_meta_updates_weights_every_k_steps_and_resumes_its_logits(setup):
    task, model, accelerator = setup
    strategy = strategies.get("meta")(["toy", "aligned", "opposed"], "toy", update_every=2, dev_batch_size=16)
    seen = []
    for step in range(4):
        losses, inputs = step_inputs(task, model, accelerator, step)
        seen.append(strategy.backward(losses, inputs))
        model.zero_grad(set_to_none=True)
    assert seen[0] == seen[1] != seen[2] == seen[3]
    resumed = strategies.get("meta")(["toy", "aligned", "opposed"], "toy")
    resumed.load_state_dict(strategy.state_dict())
    assert resumed.weights == seen[3]


def test_meta_reports_how_well_its_meta_head_fits(setup):
    task, model, accelerator = setup
    untrained = strategies.get("meta")(["toy"], "toy", head_steps=0, dev_batch_size=16)
    trained = strategies.get("meta")(["toy"], "toy", head_steps=30, head_lr=1e-2, dev_batch_size=16)
    # read with the cosines, once per update
    for strategy in (untrained, trained):
        losses, inputs = step_inputs(task, model, accelerator)
        strategy.backward({"toy": losses["toy"]}, inputs)
        assert set(strategy.state_dict()["meta_head_losses"]) == {"train", "dev"}
    # the head is fit on the step's train batch: its loss there falls with training
    assert trained.meta_head_losses["train"] < untrained.meta_head_losses["train"]
    same = strategies.get("meta")(["toy"], "toy", head="same", dev_batch_size=16)
    losses, inputs = step_inputs(task, model, accelerator)
    same.backward({"toy": losses["toy"]}, inputs)
    assert set(same.meta_head_losses) == {"dev"}  # no meta head is trained


def test_meta_head_fit_on_another_train_batch_ignores_the_steps_batch(setup):
    # head_batch=other: the meta head is fit on a train batch drawn by (seed, step), not on the
    # features of the step's batch, whose gradient the dev gradient is compared with
    task, model, accelerator = setup
    body = list(model.body.parameters())

    def dev_gradient(head_batch: str, step: int, scramble: bool) -> torch.Tensor:
        strategy = strategies.get("meta")(["toy"], "toy", head_batch=head_batch, dev_batch_size=16, seed=3)
        _, inputs = step_inputs(task, model, accelerator, step)
        if scramble:
            inputs.features["toy"] = torch.randn_like(inputs.features["toy"]) * 10
        return strategy.dev_gradient(inputs, body)

    assert torch.allclose(dev_gradient("other", 0, False), dev_gradient("other", 0, True))
    assert not torch.allclose(dev_gradient("step", 0, False), dev_gradient("step", 0, True), atol=1e-4)
    assert not torch.allclose(dev_gradient("other", 0, False), dev_gradient("other", 1, False), atol=1e-4)
    # head_batch=dev (the research code's dev head): fit on a dev batch, not the step's, nor another train batch
    assert torch.allclose(dev_gradient("dev", 0, False), dev_gradient("dev", 0, True))
    assert not torch.allclose(dev_gradient("dev", 0, False), dev_gradient("other", 0, False), atol=1e-4)


def test_a_dev_head_is_fit_on_dev_rows_other_than_the_dev_gradients_and_stops_once_its_loss_settles(setup):
    task, model, accelerator = setup
    strategy = strategies.get("meta")(["toy"], "toy", head_batch="dev", dev_batch_size=8, seed=3)
    _, inputs = step_inputs(task, model, accelerator, 0)
    head_rows = strategy.other_batch(task, inputs, "dev")[1]["input_ids"]
    gradient_rows = strategy.dev_batch(task, inputs)[0]["input_ids"]
    assert head_rows.shape[0] == 8 and not (head_rows.shape == gradient_rows.shape
                                            and torch.equal(head_rows, gradient_rows))
    # with a tolerance the head stops early: fewer loss reads than head_steps
    from tartan.training.device import HostReads
    for tolerance, most in ((0.0, 0), (10.0, 2)):
        settled = strategies.get("meta")(["toy"], "toy", head_batch="dev", dev_batch_size=8, head_steps=20,
                                         head_tolerance=tolerance)
        before = HostReads.count
        settled.train_meta_head(step_inputs(task, model, accelerator, 0)[1])
        assert HostReads.count - before == most  # a loss change below 10 after the second step: it stops


def test_static_weights_that_sum_to_zero_are_refused():
    from tartan.errors import TartanError

    with pytest.raises(TartanError, match="some task a positive weight"):
        strategies.get("static")(["toy", "aux"], "toy", weights={"toy": 0, "aux": 0})
    assert strategies.get("static")(["toy", "aux"], "toy", weights={"toy": 0}).weights == {"toy": 0.0, "aux": 1.0}


def test_sum_weights_are_each_tasks_share_of_the_drawn_batches(multitask_setup):
    # a task not drawn this step has weight 0; without a draw count every task drew once
    task, model = multitask_setup
    batch = task.collate("train", task.train_batches(0)[0])
    loss = lambda: task.loss(model.heads["toy"](model.encode(batch), batch), batch)  # noqa: E731
    strategy = strategies.get("sum")(["toy", "other", "absent"], "toy")
    accelerator = make_accelerator("fp32")
    drawn = strategy.backward({"toy": loss(), "other": loss()}, StepInputs(0, model, {}, {}, {}, accelerator,
                                                                           {"toy": 3, "other": 1}))
    assert drawn == {"toy": 0.75, "other": 0.25, "absent": 0.0}
    once = strategy.backward({"toy": loss(), "other": loss()}, StepInputs(0, model, {}, {}, {}, accelerator))
    assert once == {"toy": 0.5, "other": 0.5, "absent": 0.0}


def test_the_meta_heads_other_batch_and_the_dev_batch_advance_once_per_update(setup):
    # with an update every 2 steps, the update at step 2k draws what an update every step draws at step k
    task, model, accelerator = setup
    every_step = strategies.get("meta")(["toy"], "toy", head_batch="other", dev_batch_size=4, seed=3)
    every_other = strategies.get("meta")(["toy"], "toy", head_batch="other", dev_batch_size=4, seed=3, update_every=2)
    at = lambda strategy, step: step_inputs(task, model, accelerator, step)[1]  # noqa: E731
    for k in (1, 2, 5):
        assert torch.equal(every_other.dev_batch(task, at(every_other, 2 * k))[0]["input_ids"],
                           every_step.dev_batch(task, at(every_step, k))[0]["input_ids"])
        for split in ("train", "dev"):
            assert torch.equal(every_other.other_batch(task, at(every_other, 2 * k), split)[1]["input_ids"],
                               every_step.other_batch(task, at(every_step, k), split)[1]["input_ids"])
    assert not torch.equal(every_step.dev_batch(task, at(every_step, 1))[0]["input_ids"],
                           every_step.dev_batch(task, at(every_step, 2))[0]["input_ids"])


class TwoProcesses:
    """This process as rank 0 of 2 whose other rank computes the same: an all-reduce doubles."""

    num_processes, process_index = 2, 0

    def __init__(self, accelerator):
        self.accelerator = accelerator

    def __getattr__(self, name):
        return getattr(self.accelerator, name)


def test_a_meta_update_averages_every_gradient_once_each_while_the_next_backward_runs(setup, monkeypatch):
    from tartan.training.distributed import average_gradients

    task, model, accelerator = setup
    sizes, events = [], []
    monkeypatch.setattr(torch.distributed, "all_reduce",
                        doubling_all_reduce(lambda t: sizes.append(t.numel()) or events.append("average")))
    backward = torch.autograd.backward
    monkeypatch.setattr(torch.autograd, "backward", lambda *a, **k: events.append("backward") or backward(*a, **k))
    strategy = strategies.get("meta")(["toy", "aligned", "opposed"], "toy", head="same", dev_batch_size=16)
    losses, inputs = step_inputs(task, model, TwoProcesses(accelerator))
    strategy.backward(losses, inputs)
    average_gradients(model.heads if strategy.body_averaged else model, inputs.accelerator)
    body = sum(p.numel() for p in model.body.parameters())
    heads = [p for p in model.heads.parameters()]
    # each of the 3 task gradients and the dev gradient once, then the heads' flags and gradients:
    # T + 2 gradient all-reduces, no body gradient sent twice (before this version: one all-reduce of
    # all four; before that, one per task, the dev gradient, then the whole model again)
    assert sizes == [body] * 4 + [len(heads), sum(p.numel() for p in heads if p.grad is not None)]
    # each task's average is started before the next gradient's backward, to run beside it
    assert events[:8] == ["backward", "average"] * 4
    assert strategy.body_averaged


def test_gradients_go_between_processes_in_the_dtype_asked_for(setup, monkeypatch):
    from tartan.training.distributed import average_gradients

    task, model, accelerator = setup
    sent = []
    monkeypatch.setattr(torch.distributed, "all_reduce", doubling_all_reduce(lambda t: sent.append(t.dtype)))
    strategy = strategies.get("meta")(["toy", "aligned", "opposed"], "toy", head="same", dev_batch_size=16)
    losses, inputs = step_inputs(task, model, TwoProcesses(accelerator))
    inputs.reduce_dtype = torch.bfloat16
    strategy.backward(losses, inputs)
    average_gradients(model.heads, inputs.accelerator, torch.bfloat16)
    # the gradients in bf16, the flags of which parameters have one as they are; received back in fp32
    assert sent == [torch.bfloat16] * 4 + [torch.float32, torch.bfloat16]
    assert all(p.grad.dtype == torch.float32 for p in model.body.parameters() if p.grad is not None)


@pytest.mark.parametrize("head_batch", ["step", "other"])
def test_the_meta_head_of_accumulated_micro_batches_fits_as_on_one_batch_that_large(head_batch, setup):
    """train.accumulate promises the update of one batch that large: the meta head fits on every
    micro-batch's end-task rows (step), or on another batch of as many rows (other)."""
    task, model, accelerator = setup
    rows = task.train_batches(0)[0]  # 16

    def update(strategy, micro_batches: list[np.ndarray]) -> None:
        for number, indices in enumerate(micro_batches):
            train = task.collate("train", indices)
            hidden = model.encode(train)
            share = len(indices) / len(rows)  # each micro-batch's loss weighs by its share of the rows
            losses = {"toy": share * task.loss(model.heads["toy"](hidden, train), train)}
            strategy.backward(losses, StepInputs(0, model, {"toy": task}, {"toy": train}, {"toy": hidden.detach()},
                                                 accelerator, last_micro_batch=number == len(micro_batches) - 1))
            model.zero_grad(set_to_none=True)

    def meta(batch_size: int):
        task.batch_size = batch_size
        return strategies.get("meta")(["toy"], "toy", lr=1.0, head_batch=head_batch, head_steps=5, head_lr=1e-2)

    whole = meta(16)
    update(whole, [rows])
    halves = meta(8)
    update(halves, [rows[:8], rows[8:]])
    assert halves.meta_head_losses["train"] == pytest.approx(whole.meta_head_losses["train"], abs=1e-5)
    assert halves.cosines["toy"] == pytest.approx(whole.cosines["toy"], abs=1e-5)
    one_micro_batch = meta(8)  # the meta head of half the rows fits otherwise: the check can fail
    update(one_micro_batch, [rows[:8]])
    assert one_micro_batch.meta_head_losses["train"] != pytest.approx(whole.meta_head_losses["train"], abs=1e-3)
