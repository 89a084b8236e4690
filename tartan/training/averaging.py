"""Gradient averaging that overlaps the backward pass, for strategies whose update is one backward
(static, sum, META's steps between weight updates): the body's parameters are grouped in buckets,
in the order their gradients become ready, and each bucket's all-reduce starts, asynchronously, as
soon as its last gradient is written, while autograd goes on with the layers below. This is what
DDP's reducer does; tartan does it itself because META-TARTAN needs each task's gradient on its own
(weighting/meta.py), which one fused DDP backward cannot give, and one mechanism should serve every
strategy.

Buckets launch strictly in their order, in every process alike: collectives must be issued in the
same order everywhere, whatever the timing. The first step learns the order (rank 0's, broadcast)
and which parameters get gradients at all (a pooler no head reads gets none, and would hold its
bucket back forever); it averages after its backward, as every step did before."""
from __future__ import annotations

import torch

from .distributed import PendingAverage, average_gradients, decided_by_main, views_of

BUCKET_BYTES = 25 * 2**20  # DDP's default
FIRST_BUCKET_BYTES = 2**20  # small, as DDP's first: the first all-reduce starts early in the backward


class OverlappedAveraging:
    def __init__(self, model: torch.nn.Module, accelerator, dtype: torch.dtype | None = None,
                 bucket_bytes: int = BUCKET_BYTES, first_bucket_bytes: int = FIRST_BUCKET_BYTES):
        self.model, self.accelerator, self.dtype = model, accelerator, dtype
        self.bucket_bytes, self.first_bucket_bytes = bucket_bytes, first_bucket_bytes
        self.enabled = accelerator.num_processes > 1
        self.body = [p for p in model.body.parameters() if p.requires_grad]
        self.buckets: list[list[torch.nn.Parameter]] | None = None  # known after the first step
        self._bucket_of: dict[int, int] = {}
        self._missing: list[int] = []  # per bucket: gradients not yet ready in this backward
        self._launched: list[PendingAverage] = []  # in bucket order
        self._ready_order: list[int] = []  # the first step's: which body parameters, in what order
        self._armed = False
        self._hooks = []
        self.launched_in_backward = 0  # buckets whose all-reduce started before the backward ended
        if self.enabled:
            index = {id(p): i for i, p in enumerate(self.body)}
            self._hooks = [p.register_post_accumulate_grad_hook(lambda p, i=index[id(p)]: self._ready(i))
                           for p in self.body]

    def backward(self, loss: torch.Tensor) -> None:
        """`loss.backward()`, the body's averaging started bucket by bucket as its gradients are
        ready. Call it once per step, on the step's last micro-batch (the gradients are then the
        step's own); finish() completes it."""
        if not self.enabled:
            loss.backward()
            return
        self._armed = True
        try:
            loss.backward()
        finally:
            self._armed = False

    def finish(self, body_averaged: bool = False) -> None:
        """Every gradient of the step averaged across processes: the buckets' all-reduces awaited,
        and the rest (the heads, and whatever no bucket carried) in one flat all-reduce. A strategy
        that averaged the body itself (body_averaged) has the heads averaged only."""
        if not self.enabled:
            return
        averaged = set()
        if self.buckets is not None:
            for bucket, pending in zip(self.buckets, self._launched):
                for p, mean in zip(bucket, views_of(pending.wait(), bucket)):
                    p.grad.copy_(mean)
                averaged.update(id(p) for p in bucket)
            self._missing = [len(bucket) for bucket in self.buckets]
        self._launched = []
        if self.buckets is None and self._ready_order:
            self._make_buckets()
        rest = [p for name, p in self.model.named_parameters()
                if id(p) not in averaged and not (body_averaged and name.startswith("body."))]
        average_gradients(rest, self.accelerator, self.dtype)

    def _ready(self, index: int) -> None:
        """A body parameter's gradient is complete for this backward (a post-accumulate-grad hook)."""
        if not self._armed:
            return
        if self.buckets is None:
            self._ready_order.append(index)
            return
        bucket = self._bucket_of.get(index)
        if bucket is None:
            return
        self._missing[bucket] -= 1
        while len(self._launched) < len(self.buckets) and self._missing[len(self._launched)] == 0:
            params = self.buckets[len(self._launched)]
            flat = torch.cat([p.grad.reshape(-1) for p in params])
            self._launched.append(PendingAverage(flat, self.accelerator, self.dtype))
            self.launched_in_backward += 1

    def _make_buckets(self) -> None:
        """Buckets in the order the first step's gradients became ready, that of rank 0 in every
        process; the parameters that got none stay out (finish() averages them if they ever do)."""
        order = decided_by_main(self._ready_order, self.accelerator)
        self.buckets, size, limit = [[]], 0, self.first_bucket_bytes
        for index in order:
            p = self.body[index]
            if size >= limit:
                self.buckets.append([])
                size, limit = 0, self.bucket_bytes
            self.buckets[-1].append(p)
            self._bucket_of[index] = len(self.buckets) - 1
            size += p.numel() * p.element_size()
        self.buckets = [bucket for bucket in self.buckets if bucket]
        self._missing = [len(bucket) for bucket in self.buckets]

    def __enter__(self) -> "OverlappedAveraging":
        return self

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:  # the model goes on to other stages, with buckets of their own
            hook.remove()
        self._hooks = []
