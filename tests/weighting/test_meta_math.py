"""META-TARTAN's update computed by hand: a body of two parameter tensors, task losses whose
gradients are vectors the test chooses, and a dev loss whose gradient through a fixed head is known
in closed form. The cosines, logits, weights and mixed gradient are computed here, independently of
the strategy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tartan.training.device import make_accelerator
from tartan.weighting import StepInputs, strategies

# the dev set: 4 rows of 6 features; encode(batch) = (theta, phi) * x, so the gradient of the dev
# loss mean((hidden * scale).sum(-1)) w.r.t. (theta, phi) is scale * mean(x over the dev rows)
DEV_X = torch.tensor([[1.0, 2.0, 0.0, -1.0, 3.0, 1.0],
                      [3.0, 0.0, 1.0, 1.0, -1.0, 2.0],
                      [0.0, 1.0, 2.0, 0.0, 1.0, 0.0],
                      [2.0, 1.0, 1.0, 2.0, 1.0, -1.0]])
END_HEAD_SCALE = torch.tensor([1.0, -1.0, 2.0, 0.5, 1.0, 3.0])  # the end task's own head
META_HEAD_SCALE = torch.tensor([2.0, 1.0, -1.0, 1.0, 0.5, -2.0])  # every fresh meta head's start
# each task's loss is gradient . (theta, phi): these are its gradients w.r.t. the body; "other" is
# small, so that its norm times the dev gradient's is below 1 (the cosine's guard against 0 is tiny)
TASK_GRADIENTS = {"end": torch.tensor([1.0, 0.0, 2.0, -1.0, 0.5, 1.0]),
                  "aux": torch.tensor([-2.0, 1.0, 0.0, 3.0, 1.0, -1.0]),
                  "other": torch.tensor([0.05, 0.05, -0.05, 0.05, 0.05, 0.05])}


class Body(nn.Module):
    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([0.3, -0.2, 0.1, 0.4]))
        self.phi = nn.Parameter(torch.tensor([0.7, -0.5]))
        self.unused = nn.Parameter(torch.ones(3))  # reached by no loss, as a body's pooler is not

    def flat(self) -> torch.Tensor:
        return torch.cat([self.theta, self.phi])


class Head(nn.Module):
    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.scale = nn.Parameter(scale.clone())

    def forward(self, hidden, batch):
        return (hidden * self.scale).sum(-1)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = Body()
        self.heads = nn.ModuleDict({name: Head(END_HEAD_SCALE) for name in TASK_GRADIENTS})

    def encode(self, batch):
        return batch["x"] * self.body.flat()


class Task:
    """The end task as the strategy sees it: dev batches of DEV_X, a mean loss, fresh heads."""

    name, batch_size = "end", 4

    def shuffled_batches(self, split, epoch, batch_size):
        return [np.arange(len(DEV_X))]

    def collate(self, split, indices, draw=0, batch_of=None):
        return {"x": DEV_X[indices]}

    def loss_units(self, batch):
        return len(batch["x"])

    def head_view(self, features, batch):
        return features, batch

    def loss(self, output, batch):
        return output.mean()

    def make_head(self, body):
        return Head(META_HEAD_SCALE)


def step(model: Model, strategy, number: int = 0) -> dict[str, float]:
    theta = model.body.flat()
    losses = {name: (gradient * theta).sum() for name, gradient in TASK_GRADIENTS.items()}
    train = {"x": DEV_X[:2]}
    inputs = StepInputs(number, model, {"end": Task()}, {"end": train}, {"end": model.encode(train).detach()},
                        make_accelerator("fp32"))
    return strategy.backward(losses, inputs)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b) / math.sqrt(float(a @ a) * float(b @ b))


def softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


@pytest.mark.parametrize("head, scale", [("same", END_HEAD_SCALE), ("separate", META_HEAD_SCALE)])
def test_one_update_moves_each_logit_by_lr_times_the_cosine_and_mixes_the_gradients(head, scale):
    model, lr = Model(), 0.3
    # head_lr 0: the fresh meta head keeps its known start, so the dev gradient is known
    strategy = strategies.get("meta")(list(TASK_GRADIENTS), "end", lr=lr, head=head, head_lr=0.0,
                                      head_weight_decay=0.0, head_steps=2)
    weights = step(model, strategy)

    dev_gradient = scale * DEV_X.mean(0)
    cosines = [cosine(g, dev_gradient) for g in TASK_GRADIENTS.values()]
    assert [strategy.cosines[n] for n in TASK_GRADIENTS] == pytest.approx(cosines, abs=1e-6)
    assert strategy.logits.tolist() == pytest.approx([lr * c for c in cosines], abs=1e-6)
    expected_weights = softmax([lr * c for c in cosines])
    assert [weights[n] for n in TASK_GRADIENTS] == pytest.approx(expected_weights, abs=1e-6)
    mixed = sum(w * g for w, g in zip(expected_weights, TASK_GRADIENTS.values()))
    assert torch.cat([model.body.theta.grad, model.body.phi.grad]).tolist() == pytest.approx(mixed.tolist(), abs=1e-6)
    assert model.body.unused.grad.tolist() == [0.0, 0.0, 0.0]


def test_logits_accumulate_over_updates_and_only_on_update_steps():
    model, lr = Model(), 0.5
    strategy = strategies.get("meta")(list(TASK_GRADIENTS), "end", lr=lr, head="same", update_every=2)
    dev_gradient = END_HEAD_SCALE * DEV_X.mean(0)  # the body's parameters do not enter the gradient
    cosines = torch.tensor([cosine(g, dev_gradient) for g in TASK_GRADIENTS.values()], dtype=torch.float64)
    for number, updates in ((0, 1), (1, 1), (2, 2), (3, 2), (4, 3)):
        model.zero_grad(set_to_none=True)
        weights = step(model, strategy, number)
        assert strategy.logits.tolist() == pytest.approx((updates * lr * cosines).tolist(), abs=1e-6)
        assert [weights[n] for n in TASK_GRADIENTS] == pytest.approx(softmax((updates * lr * cosines).tolist()), abs=1e-6)


def test_body_gradient_is_added_to_one_already_there():
    # the loop may have left gradients from elsewhere in .grad (R3F, another pass): the mix adds to them
    model = Model()
    strategy = strategies.get("meta")(list(TASK_GRADIENTS), "end", lr=0.0, head="same")
    model.body.theta.grad = torch.ones(4)
    model.body.phi.grad = torch.full((2,), 2.0)
    step(model, strategy)
    mixed = sum(g / 3 for g in TASK_GRADIENTS.values())  # lr 0: uniform weights
    expected = mixed + torch.tensor([1.0, 1, 1, 1, 2, 2])
    assert torch.cat([model.body.theta.grad, model.body.phi.grad]).tolist() == pytest.approx(expected.tolist(), abs=1e-6)


def test_heads_step_on_their_own_task_gradient_unweighted():
    model = Model()
    strategy = strategies.get("meta")(list(TASK_GRADIENTS), "end", lr=1.0, head="same")
    train = {"x": DEV_X[:2]}
    hidden = model.encode(train)
    # each task's loss reaches its own head (a graph of its own, as in training): the gradient w.r.t.
    # its scale is mean(hidden) * (k + 1)
    losses = {name: (gradient * model.body.flat()).sum() + (k + 1) * model.heads[name](model.encode(train), train).mean()
              for k, (name, gradient) in enumerate(TASK_GRADIENTS.items())}
    inputs = StepInputs(0, model, {"end": Task()}, {"end": train}, {"end": hidden.detach()}, make_accelerator("fp32"))
    model.heads["aux"].scale.grad = torch.ones(6)  # a gradient already there is added to
    strategy.backward(losses, inputs)
    for k, name in enumerate(TASK_GRADIENTS):
        expected = (k + 1) * hidden.detach().mean(0) + (1 if name == "aux" else 0)
        assert model.heads[name].scale.grad.tolist() == pytest.approx(expected.tolist(), abs=1e-6)


def test_a_step_whose_gradient_overflowed_leaves_the_weights_and_passes_the_overflow_on():
    """fp16: the loss scaler skips a step whose gradient is not finite; the weights must not take
    the NaN cosines in, or every later mix is NaN and every later step skipped."""
    model, lr = Model(), 0.5
    strategy = strategies.get("meta")(list(TASK_GRADIENTS), "end", lr=lr, head="same")
    step(model, strategy, 0)
    logits, cosines = strategy.logits.clone(), dict(strategy.cosines)
    model.zero_grad(set_to_none=True)
    overflow = dict(TASK_GRADIENTS, aux=TASK_GRADIENTS["aux"] * torch.tensor([1.0, float("inf"), 1, 1, 1, 1]))
    theta = model.body.flat()
    losses = {name: (gradient * theta).sum() for name, gradient in overflow.items()}
    train = {"x": DEV_X[:2]}
    strategy.backward(losses, StepInputs(1, model, {"end": Task()}, {"end": train},
                                         {"end": model.encode(train).detach()}, make_accelerator("fp32")))
    assert torch.equal(strategy.logits, logits) and strategy.cosines == cosines
    assert not torch.isfinite(model.body.theta.grad).all()  # what the scaler reads to skip the step
    model.zero_grad(set_to_none=True)
    step(model, strategy, 2)  # the next finite step updates as the first did
    assert strategy.logits.tolist() == pytest.approx((2 * logits).tolist(), abs=1e-6)
