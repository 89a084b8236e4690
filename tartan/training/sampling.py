"""Which tasks contribute a batch at each step of a stage, and which of their batches.

A schedule is a pure function of (stage, task sizes, seed): step -> [(task, n)], where n counts the
task's earlier draws, so that its batch is the task's n-th (epoch = n // batches per epoch) and a
resumed run draws what an uninterrupted one would. `all` (MT/META-TARTAN, fine-tuning) gives every
task its batch number `step`; the MUPPET batching schemes (Aghajanyan et al. 2021) draw. Add a
scheme: a function here registered in `schemes`."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..registry import Registry

# (task names, train examples per task, batches per task epoch, steps, options, rng) -> task names per step
schemes: Registry[Callable[..., list[list[str]]]] = Registry("batching scheme")


def task_probabilities(names: list[str], sizes: dict[str, int], sampling: str) -> np.ndarray:
    """natural: in proportion to the train sizes (the research found up/down-sampling harmful);
    uniform: equally often."""
    weights = np.array([sizes[n] if sampling == "natural" else 1.0 for n in names], dtype=np.float64)
    return weights / weights.sum()


@schemes.register("heterogeneous")
def heterogeneous(names, sizes, per_epoch, steps, options, rng) -> list[list[str]]:
    """Every update sums the batches of `tasks_per_update` draws (with replacement) across tasks."""
    p = task_probabilities(names, sizes, options.get("sampling", "natural"))
    draws = rng.choice(len(names), size=(steps, options.get("tasks_per_update", 4)), p=p)
    return [[names[i] for i in row] for row in draws]


@schemes.register("batch_homogeneous")
def batch_homogeneous(names, sizes, per_epoch, steps, options, rng) -> list[list[str]]:
    """Every update's batches come from one task, drawn per update."""
    p = task_probabilities(names, sizes, options.get("sampling", "natural"))
    k = options.get("tasks_per_update", 4)
    return [[names[i]] * k for i in rng.choice(len(names), size=steps, p=p)]


@schemes.register("dataset_homogeneous")
def dataset_homogeneous(names, sizes, per_epoch, steps, options, rng) -> list[list[str]]:
    """One task's epoch after the other's (in the order given), `tasks_per_update` batches a step."""
    k = options.get("tasks_per_update", 4)
    sequence: list[str] = []
    while len(sequence) < steps * k:
        for name in names:
            sequence += [name] * per_epoch[name]
    return [sequence[i * k:(i + 1) * k] for i in range(steps)]


def steps_per_epoch(scheme: str, names: list[str], per_epoch: dict[str, int], options: dict) -> int:
    """`all`: an epoch is counted on the first (end) task; a drawing scheme: every task's batches once."""
    if scheme == "all":
        return per_epoch[names[0]]
    return max(1, -(-sum(per_epoch[n] for n in names) // options.get("tasks_per_update", 4)))


class Schedule:
    """The draws of every step of a stage."""

    def __init__(self, scheme: str, names: list[str], sizes: dict[str, int], per_epoch: dict[str, int],
                 steps: int, options: dict):
        self.names = list(names)
        self.scheme = scheme
        self._steps: list[list[tuple[str, int]]] = []
        if scheme != "all":
            rng = np.random.default_rng([options.get("seed", 0), 7919])
            counts = dict.fromkeys(names, 0)
            for step_tasks in schemes.get(scheme)(self.names, sizes, per_epoch, steps, options, rng):
                draws = []
                for name in step_tasks:
                    draws.append((name, counts[name]))
                    counts[name] += 1
                self._steps.append(draws)

    def at(self, step: int) -> list[tuple[str, int]]:
        if self.scheme == "all":
            return [(name, step) for name in self.names]
        return self._steps[step]
