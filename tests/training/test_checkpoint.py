"""tartan.training.checkpoint: what a resume needs (weights, optimizer, scheduler, RNG, loop state)
written as one folder and read back exactly; the best weights kept inside it; the complete copy
found under last.old when a kill cut a swap short."""
from __future__ import annotations

import copy
import os

import pytest
import torch
from safetensors.torch import load_file

from tartan.training.checkpoint import BEST, best_weights, checkpoint_state, load_checkpoint, save_checkpoint


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def make_training(model):
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    return optimizer, scheduler


def train_steps(model, optimizer, scheduler, steps: int) -> None:
    for _ in range(steps):
        loss = model(torch.randn(5, 4)).pow(2).mean()
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()


def weights_of(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


STATE = {"loop": {"step": 3, "best_step": 3}, "strategy": {"logits": [0.1, 0.2]}, "seeds": {"toy": 0}}


def test_a_checkpoint_restores_weights_optimizer_scheduler_rng_and_state(tmp_path):
    model = make_model()
    optimizer, scheduler = make_training(model)
    train_steps(model, optimizer, scheduler, 3)
    saved_weights, saved_optimizer = weights_of(model), copy.deepcopy(optimizer.state_dict())  # not live
    save_checkpoint(tmp_path / "last", model, optimizer, scheduler, STATE, best_is_current=True)
    assert sorted(os.listdir(tmp_path)) == ["last"]  # no temporary folder left
    draws = torch.rand(4)  # what the RNG draws next, as of the checkpoint
    train_steps(model, optimizer, scheduler, 2)  # the run goes on, then is killed

    fresh = make_model(seed=1)
    fresh_optimizer, fresh_scheduler = make_training(fresh)
    assert load_checkpoint(tmp_path / "last", fresh, fresh_optimizer, fresh_scheduler) == STATE
    assert same(weights_of(fresh), saved_weights)
    loaded = fresh_optimizer.state_dict()
    assert loaded["param_groups"] == saved_optimizer["param_groups"]
    for index, values in saved_optimizer["state"].items():
        assert all(torch.equal(torch.as_tensor(values[k]), torch.as_tensor(loaded["state"][index][k])) for k in values)
    assert fresh_scheduler.last_epoch == 3 and fresh_scheduler.get_last_lr() == pytest.approx([0.1 / 4])
    assert torch.equal(torch.rand(4), draws)
    assert checkpoint_state(tmp_path / "last") == STATE


def test_the_resumed_run_steps_as_the_uninterrupted_one(tmp_path):
    model = make_model()
    optimizer, scheduler = make_training(model)
    train_steps(model, optimizer, scheduler, 2)
    save_checkpoint(tmp_path / "last", model, optimizer, scheduler, STATE, best_is_current=False)
    train_steps(model, optimizer, scheduler, 3)
    uninterrupted = weights_of(model)

    resumed = make_model(seed=2)
    resumed_optimizer, resumed_scheduler = make_training(resumed)
    load_checkpoint(tmp_path / "last", resumed, resumed_optimizer, resumed_scheduler)
    train_steps(resumed, resumed_optimizer, resumed_scheduler, 3)  # same batches (RNG), moments and rates
    assert same(weights_of(resumed), uninterrupted)


def test_no_checkpoint_is_none(tmp_path):
    model = make_model()
    optimizer, scheduler = make_training(model)
    assert load_checkpoint(tmp_path / "last", model, optimizer, scheduler) is None
    assert checkpoint_state(tmp_path / "last") is None
    (tmp_path / "last").mkdir()  # a folder without its state is no checkpoint either
    assert checkpoint_state(tmp_path / "last") is None
    with pytest.raises(FileNotFoundError):
        best_weights(tmp_path / "last")


def test_the_best_weights_stay_those_of_the_last_best_checkpoint(tmp_path):
    model = make_model()
    optimizer, scheduler = make_training(model)
    folder = tmp_path / "last"
    save_checkpoint(folder, model, optimizer, scheduler, STATE, best_is_current=False)
    assert not (folder / BEST).exists()  # a timed checkpoint before any evaluation: no best yet
    with pytest.raises(FileNotFoundError):
        best_weights(folder)

    train_steps(model, optimizer, scheduler, 1)
    best = weights_of(model)
    save_checkpoint(folder, model, optimizer, scheduler, STATE, best_is_current=True)
    for _ in range(2):  # evaluations without improvement (or timed checkpoints): the best is carried on
        train_steps(model, optimizer, scheduler, 1)
        save_checkpoint(folder, model, optimizer, scheduler, STATE, best_is_current=False)
    assert best_weights(folder) == folder / BEST
    assert same(load_file(str(folder / BEST)), best)
    assert same(load_file(str(folder / "model.safetensors")), weights_of(model))  # the resume weights move on
    assert not same(best, weights_of(model))


def test_a_swap_cut_short_resumes_from_last_old(tmp_path):
    model = make_model()
    optimizer, scheduler = make_training(model)
    train_steps(model, optimizer, scheduler, 1)
    best = weights_of(model)
    save_checkpoint(tmp_path / "last", model, optimizer, scheduler, STATE, best_is_current=True)
    os.replace(tmp_path / "last", tmp_path / "last.old")  # killed after moving last aside, before the new one

    assert checkpoint_state(tmp_path / "last") == STATE
    assert best_weights(tmp_path / "last") == tmp_path / "last.old" / BEST
    fresh = make_model(seed=1)
    fresh_optimizer, fresh_scheduler = make_training(fresh)
    assert load_checkpoint(tmp_path / "last", fresh, fresh_optimizer, fresh_scheduler) == STATE
    assert same(weights_of(fresh), best)

    # the resumed run's next checkpoint carries the best weights over from last.old, and replaces it
    train_steps(fresh, fresh_optimizer, fresh_scheduler, 1)
    later = {**STATE, "loop": {"step": 4, "best_step": 3}}
    save_checkpoint(tmp_path / "last", fresh, fresh_optimizer, fresh_scheduler, later, best_is_current=False)
    assert sorted(os.listdir(tmp_path)) == ["last"]
    assert checkpoint_state(tmp_path / "last") == later
    assert same(load_file(str(best_weights(tmp_path / "last"))), best)


def test_a_checkpoint_written_on_a_gpu_resumes_on_the_cpu(tmp_path, monkeypatch):
    # the stand-in for a kill-and-resume across devices where no GPU is at hand: every tensor of the
    # resume state saved as a GPU would save it (its storages tagged cuda:0), loaded on this CPU
    model = make_model()
    optimizer, scheduler = make_training(model)
    train_steps(model, optimizer, scheduler, 3)
    with monkeypatch.context() as on_gpu:
        on_gpu.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        save_checkpoint(tmp_path / "last", model, optimizer, scheduler, {"loop": {"step": 3}}, best_is_current=True)
    with pytest.raises(RuntimeError, match="CUDA device"):  # what a load without map_location meets
        torch.load(tmp_path / "last" / "optimizer.pt", weights_only=True)
    resumed = make_model(seed=1)
    resumed_optimizer, resumed_scheduler = make_training(resumed)
    assert load_checkpoint(tmp_path / "last", resumed, resumed_optimizer, resumed_scheduler) == {"loop": {"step": 3}}
    assert same(weights_of(resumed), weights_of(model))
    state = resumed_optimizer.state_dict()["state"]
    assert all(v.device.type == "cpu" for s in state.values() for v in s.values() if isinstance(v, torch.Tensor))
    assert torch.equal(state[0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert resumed_scheduler.last_epoch == 3


def test_each_process_resumes_with_its_own_generators(tmp_path):
    from tartan.training.checkpoint import rng_state

    model = make_model()
    optimizer, scheduler = make_training(model)
    torch.manual_seed(1)
    first = rng_state()
    torch.manual_seed(2)
    second = rng_state()
    save_checkpoint(tmp_path / "last", model, optimizer, scheduler, {"loop": {"step": 1}}, best_is_current=True,
                    rng_states=[first, second])
    for rank, expected in ((0, 1), (1, 2)):
        torch.manual_seed(99)
        load_checkpoint(tmp_path / "last", model, optimizer, scheduler, rank=rank)
        drawn = torch.rand(3)
        torch.manual_seed(expected)
        assert torch.equal(drawn, torch.rand(3))
    # a checkpoint from before every process's generators were kept: its one state for every rank
    torch.save({"torch": first["torch"]}, tmp_path / "last" / "rng.pt")
    load_checkpoint(tmp_path / "last", model, optimizer, scheduler, rank=1)
    drawn = torch.rand(3)
    torch.manual_seed(1)
    assert torch.equal(drawn, torch.rand(3))
