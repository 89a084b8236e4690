"""Counting, on any device, the operations that make a GPU wait for the host: a value read into
Python (`.item()`, `float()`, `int()`, `bool()`), a copy to the CPU, and an operation
whose output shape depends on the values (`nonzero`, boolean-mask indexing, `masked_select`). On a
CPU none of these waits, but the same code on a GPU would: counting them here proves a step
sync-free before a GPU is at hand (on one, `torch.cuda.set_sync_debug_mode("error")` proves it
there). `.tolist()` of a CPU tensor does not dispatch and is not seen: tartan reads through
`device.to_host`, which counts its own calls. Depends on torch only, so that a benchmark can count
the syncs of an older tartan too."""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_VALUE_SHAPED = {"aten.nonzero.default", "aten.masked_select.default", "aten.unique_consecutive.default",
                 "aten._unique2.default", "aten.repeat_interleave.Tensor"}
_READS = {"aten._local_scalar_dense.default", "aten.equal.default", "aten.is_nonzero.default"}


class SyncCounter(TorchDispatchMode):
    """Within `with SyncCounter() as syncs:` (on the thread that enters it), `syncs.counts` holds how
    many of each syncing operation ran; `paused()` leaves out what runs inside it (collation on the
    host, which a GPU never waits for)."""

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()
        self._paused = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self._paused:
            name = str(func)
            if name in _READS or name in _VALUE_SHAPED:
                self.counts[name] += 1
            elif name.startswith("aten.index.Tensor") and any(
                    isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else [])
                    if i is not None):
                self.counts["boolean-mask indexing"] += 1
            elif name == "aten._to_copy.default" and kwargs.get("device") is not None and \
                    torch.device(kwargs["device"]).type == "cpu" and args[0].device.type != "cpu":
                self.counts["copy to the CPU"] += 1
        return func(*args, **kwargs)

    @contextmanager
    def paused(self):
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1


class StepMarks:
    """The counts at each optimizer step, so that what happens between two steps (one step's
    forward, backward and update) is counted on its own: `attach` to an optimizer."""

    def __init__(self, counter: SyncCounter, reads=lambda: 0):
        self.counter, self.reads = counter, reads  # reads: tartan's own count of reads (to_host)
        self.marks: list[tuple[int, int, Counter]] = []

    def attach(self, optimizer):
        optimizer.register_step_pre_hook(
            lambda *_: self.marks.append((self.counter.total, self.reads(), Counter(self.counter.counts))))
        return optimizer

    def syncs_per_step(self) -> list[int]:
        """Per step after the first, the syncs counted and the reads."""
        return [(b[0] - a[0]) + (b[1] - a[1]) for a, b in zip(self.marks, self.marks[1:])]

    def reads_per_step(self) -> list[int]:
        return [b[1] - a[1] for a, b in zip(self.marks, self.marks[1:])]

    def kinds(self) -> dict[str, int]:
        """What was counted between the first step and the last."""
        return dict(self.marks[-1][2] - self.marks[0][2]) if self.marks else {}


def arm_between_steps(optimizer, steps: int):
    """On a GPU: torch.cuda.set_sync_debug_mode("error") from the end of the optimizer's first step
    to the end of step `steps`, so that any sync inside steps 2 to `steps` raises where it happens."""
    taken = []

    def after_step(*_):
        taken.append(1)
        torch.cuda.set_sync_debug_mode("error" if len(taken) < steps else "default")

    optimizer.register_step_post_hook(after_step)
    return optimizer


def allowed(function):
    """`function` with syncs allowed while it runs (the reads a step must make)."""
    def run(*args, **kwargs):
        mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("default")
        try:
            return function(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode(mode)
    return run
