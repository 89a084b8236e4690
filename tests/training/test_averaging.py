"""Averaging that overlaps the backward pass (training/averaging.py), on two real processes (gloo)."""
from __future__ import annotations

import os
from types import SimpleNamespace

import torch
import torch.multiprocessing as mp
from torch import nn

from tartan.training.averaging import OverlappedAveraging


class Body(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 16))
        self.unused = nn.Linear(4, 4)  # as a pooler no head reads: never a gradient

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = Body()
        self.heads = nn.ModuleDict({"a": nn.Linear(16, 3), "b": nn.Linear(16, 2)})

    def loss(self, head: str, x: torch.Tensor) -> torch.Tensor:
        return self.heads[head](self.body(x)).square().mean()


def batch(rank: int, step: int) -> torch.Tensor:
    return torch.randn(5, 6, generator=torch.Generator().manual_seed(100 * step + rank))


def gradients(model: Model, rank: int, step: int, heads: str) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    sum(model.loss(h, batch(rank, step)) for h in heads).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def worker(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    accelerator = SimpleNamespace(num_processes=2, process_index=rank, device=torch.device("cpu"))
    model = Model()
    # step 0 learns the order, steps 1 and 2 overlap; step 2 draws head "a" alone (head "b" gets none)
    steps = ["ab", "ab", "a"]
    expected = []
    for step, heads in enumerate(steps):
        mine, other = gradients(model, rank, step, heads), gradients(model, 1 - rank, step, heads)
        expected.append({n: (mine[n] + other[n]) / 2 for n in mine})
    missing_at_launch, launched = [], []
    all_reduce = torch.distributed.all_reduce

    def recording(tensor, *args, **kwargs):
        if kwargs.get("async_op"):  # a bucket: how many body gradients were still to come
            missing_at_launch.append(sum(p.grad is None for p in model.body.parameters() if p is not None))
        return all_reduce(tensor, *args, **kwargs)

    torch.distributed.all_reduce = recording
    # 1-byte buckets: a bucket per parameter
    with OverlappedAveraging(model, accelerator, bucket_bytes=1, first_bucket_bytes=1) as averaging:
        for step, heads in enumerate(steps):
            model.zero_grad(set_to_none=True)
            averaging.backward(sum(model.loss(h, batch(rank, step)) for h in heads))
            averaging.finish()
            got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            launched.append(averaging.launched_in_backward)
            results[(rank, step)] = (sorted(got) == sorted(expected[step]),
                                     max(float((got[n] - expected[step][n]).abs().max()) for n in got))
        results[(rank, "launched")] = launched
        results[(rank, "missing")] = max(missing_at_launch)
        results[(rank, "buckets")] = len(averaging.buckets)
    torch.distributed.destroy_process_group()


def test_buckets_average_while_the_backward_runs_and_equal_the_mean_of_the_processes_gradients():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(worker, args=(port, results), nprocs=2)
        results = dict(results)
    for rank in (0, 1):
        for step in range(3):
            same_parameters, difference = results[(rank, step)]
            # the unused layer and an undrawn head keep no gradient, as in one process
            assert same_parameters and difference < 1e-6
        # 6 body parameters got gradients: a bucket each, learned in the first step; each later step
        # launches all six from the backward's hooks
        assert results[(rank, "buckets")] == 6
        assert results[(rank, "launched")] == [0, 6, 12]
        # the first bucket left while most of the body's gradients were still being computed
        assert results[(rank, "missing")] >= 4
