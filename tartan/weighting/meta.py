"""META-TARTAN (Dery et al. 2021, Algorithm 1): task weights learned online from how well each task's
gradient agrees with the gradient of the end task's dev loss.

Per weight update: each task's gradient w.r.t. the shared body; a meta head, fresh each update,
trained for a few steps on the end task's train batch with the body frozen (the step's own batch,
or another: `head_batch`); the dev gradient, of the
end task's loss on a dev batch through body + meta head; weight logit += lr x cos(task gradient, dev
gradient) for every task, the end task included. The body steps on the softmax(logits) mix of the
task gradients; each head steps on its own task's gradient, unweighted."""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch

from ..data.batching import to_device
from ..tasks.mlm import stable_seed  # below 2**63, alike in every process
from ..training.device import to_host
from ..training.distributed import PendingAverage, collate_own_rows, loss_share, rows_per_process
from . import StepInputs, WeightingStrategy, strategies


@strategies.register("meta")
class MetaWeighting(WeightingStrategy):
    def __init__(self, task_names: list[str], end_task: str, lr: float = 0.1, head: str = "separate",
                 update_every: int = 1, head_steps: int = 10, head_lr: float = 1e-3,
                 head_weight_decay: float = 0.1, dev_batch_size: int = 16, head_batch: str = "step", seed: int = 0,
                 head_tolerance: float = 0.0, **options):
        super().__init__(task_names, end_task)
        self.lr, self.head, self.update_every, self.head_batch = lr, head, update_every, head_batch
        self.head_steps, self.head_lr, self.head_weight_decay = head_steps, head_lr, head_weight_decay
        self.dev_batch_size, self.seed, self.head_tolerance = dev_batch_size, seed, head_tolerance
        self.logits = torch.zeros(len(self.task_names), dtype=torch.float64)  # equal weights at the start
        self.cosines: dict[str, float] = {}
        # how well the meta head fits: its loss on the end-task batch it trained on, after training,
        # and the dev loss it passes the gradient of (log(classes) is chance)
        self.meta_head_losses: dict[str, float] = {}
        self._rows: torch.Tensor | None = None  # the gradient buffer (gradient_rows)
        self._row_views: list[list[torch.Tensor]] = []  # each row cut into the body's shapes
        self._mixed: torch.Tensor | None = None  # the body's mixed gradient, its .grad are views of it
        self._head_losses: dict[str, torch.Tensor] = {}  # on the device until the update's one read
        self._accumulating = False  # inside a step's micro-batches
        self._micro_batches = 0  # of this step so far
        # what the meta head reads of each micro-batch's end-task rows (head_batch=step): it fits on
        # the whole step's batch, as it would on one batch that large
        self._step_views: list[tuple[torch.Tensor, dict]] = []

    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.task_names, torch.softmax(self.logits, 0).tolist()))

    def backward(self, losses: dict[str, torch.Tensor], inputs: StepInputs) -> dict[str, float]:
        self.body_averaged = False
        if inputs.step % self.update_every:
            return self.static_backward(losses, inputs)
        body = [p for p in inputs.model.body.parameters() if p.requires_grad]
        rows = self.gradient_rows(body, first=not self._accumulating)
        self._micro_batches += 1
        if self.head == "separate" and self.head_batch == "step" and self.end_task in inputs.features:
            self._step_views.append(self.step_view(inputs))
        averaging = self.task_gradients(losses, inputs, body, rows)
        self._accumulating = not inputs.last_micro_batch
        if self._accumulating:
            return self.weights
        self.dev_gradient(inputs, body, rows[-1])
        self._micro_batches, self._step_views = 0, []
        averaging.append(PendingAverage(rows[-1], inputs.accelerator, inputs.reduce_dtype))
        for pending in averaging:
            pending.wait()
        tasks, dev = rows[:-1], rows[-1]
        cosines = tasks @ dev / (torch.linalg.vector_norm(tasks, dim=1) * torch.linalg.vector_norm(dev)).clamp_min(1e-12)
        # the one read of the update: the cosines, and how well the meta head fit
        head_losses = [loss.float().reshape(1) for loss in self._head_losses.values()]
        read = to_host(torch.cat([cosines.float(), *head_losses])).double()
        task_cosines = read[:len(self.task_names)]
        # an fp16 gradient that overflowed: the loss scaler skips this step and lowers its scale, and
        # the weights stay as they are (a NaN in the logits would make every later mix NaN, every
        # later step skipped). Checked in Python: the values are on the host already
        if all(math.isfinite(value) for value in task_cosines.tolist()):
            self.logits += self.lr * task_cosines
            self.cosines = dict(zip(self.task_names, task_cosines.tolist()))
        self.meta_head_losses = dict(zip(self._head_losses, read[len(self.task_names):].tolist()))
        mix = torch.softmax(self.logits, 0).to(device=tasks.device, dtype=tasks.dtype, non_blocking=True)
        if self._mixed is None or any(p.grad is not None for p in body):
            # a gradient already there may be a view of the last step's buffer: a new one
            self._mixed = torch.empty_like(dev)
        mixed = torch.mv(tasks.T, mix, out=self._mixed)
        for p, gradient in zip(body, _views(mixed, body)):
            p.grad = gradient if p.grad is None else p.grad + gradient
        self.body_averaged = True
        return self.weights

    def static_backward(self, losses: dict[str, torch.Tensor], inputs: StepInputs) -> dict[str, float]:
        """A step that does not update the weights: one backward of the weighted sum of the losses,
        as static weighting does, the heads' gradients then unweighted (each head steps on its own
        task's gradient, as on update steps)."""
        weights = self.weights
        inputs.backward(sum(weights[name] * loss for name, loss in losses.items()))
        if inputs.last_micro_batch:
            for name in losses:
                grads = [p.grad for p in inputs.model.heads[name].parameters() if p.grad is not None]
                if grads:
                    torch._foreach_div_(grads, weights[name])
        return weights

    def gradient_rows(self, body: list, first: bool) -> torch.Tensor:
        """One flat buffer, a row per task and one for the dev gradient, kept across steps; zeroed
        at the first micro-batch of a step. The body's .grad point into a row while a task's
        gradient is computed, so autograd writes it there: no copy, and the cosines and the mix are
        a few operations on the whole buffer instead of a few per parameter."""
        size = sum(p.numel() for p in body)
        shape = (len(self.task_names) + 1, size)
        reference = body[0]
        if self._rows is None or self._rows.shape != shape or self._rows.device != reference.device:
            self._rows = torch.zeros(shape, dtype=reference.dtype, device=reference.device)
            self._row_views = [_views(row, body) for row in self._rows]
            self._mixed = None
        elif first:
            self._rows.zero_()
        return self._rows

    def task_gradients(self, losses: dict[str, torch.Tensor], inputs: StepInputs, body: list,
                       rows: torch.Tensor) -> list[PendingAverage]:
        """Each task's gradient w.r.t. the body, added to its row (this process's share). On a
        step's last micro-batch each row's average across processes starts as soon as it is
        complete, while the next task's backward runs; the averages under way are returned. Each
        head's gradient goes to its .grad."""
        averaging = []
        for row, views, name in zip(rows, self._row_views, self.task_names):
            if name not in losses:
                continue
            head = [p for p in inputs.model.heads[name].parameters() if p.requires_grad]
            # the tasks' graphs share only parameters, so each is walked once: together these cost
            # what one backward of the summed losses costs
            with _gradients_into(body, views):
                torch.autograd.backward(losses[name], inputs=body + head)
            if inputs.last_micro_batch:
                averaging.append(PendingAverage(row, inputs.accelerator, inputs.reduce_dtype))
        return averaging

    def dev_gradient(self, inputs: StepInputs, body: list, row: torch.Tensor | None = None) -> torch.Tensor:
        """The gradient w.r.t. the body (flat) of the end task's loss on a dev batch, through the
        meta head (or, for the same-head ablation, the end task's own head), added to `row`."""
        if row is None:
            row = torch.zeros(sum(p.numel() for p in body), dtype=body[0].dtype, device=body[0].device)
        task, model, accelerator = inputs.tasks[self.end_task], inputs.model, inputs.accelerator
        self._head_losses = {}
        # every process must draw the same meta head and dev batch: seed from (seed, step), not from
        # the process's random state
        device = inputs.accelerator.device
        # the GPU's generators too: the meta head is drawn there, and the step's dropout must not notice
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(stable_seed(self.seed, inputs.step))
            head = model.heads[self.end_task] if self.head == "same" else self.train_meta_head(inputs)
            dev, share = self.dev_batch(task, inputs)
            with accelerator.autocast():
                loss = task.loss(head(model.encode(dev), dev), dev)
            # inputs=body: the own head of the same-head ablation keeps its task's gradient only
            with _gradients_into(body, _views(row, body)):
                torch.autograd.backward(loss * share, inputs=body)
            self._head_losses["dev"] = loss.detach()
        return row

    def step_view(self, inputs: StepInputs) -> tuple[torch.Tensor, dict]:
        """What the meta head reads of this micro-batch's end-task rows (the first token's vector,
        the labels), from the step's own forward pass; the global batch's, in every process."""
        task, accelerator = inputs.tasks[self.end_task], inputs.accelerator
        features, batch = task.head_view(inputs.features[self.end_task], inputs.batches[self.end_task])
        if accelerator.num_processes > 1:  # every process trains the same head on the global batch
            features, batch = _gather_rows(features, batch, accelerator, inputs.global_rows[self.end_task])
        return features, batch

    def train_meta_head(self, inputs: StepInputs) -> torch.nn.Module:
        """A fresh end-task head trained on end-task train features: those of this step's batch (the
        body's output from the step's own forward pass, so the body does not run again), or, with
        head_batch=other, those of another train batch (as many rows as the step's)."""
        task = inputs.tasks[self.end_task]
        if self.head_batch in ("other", "dev"):
            split = "dev" if self.head_batch == "dev" else "train"
            # another train batch as large as the step's, all its micro-batches' (train.accumulate);
            # one batch's where called outside a step's backward
            features, batch = self.other_batch(task, inputs, split,
                                               task.batch_size * max(self._micro_batches, 1) if split == "train" else None)
        else:
            features, batch = _concatenated(self._step_views or [self.step_view(inputs)])
        features = features.float()
        with features.device:  # made where it trains: a copy from the host would wait on the device
            meta_head = task.make_head(inputs.model.body)
        # fused: the step count stays a tensor; the per-tensor AdamW reads it on the host every step
        optimizer = torch.optim.AdamW(meta_head.parameters(), lr=self.head_lr, weight_decay=self.head_weight_decay,
                                      fused=True)
        previous = None
        for _ in range(self.head_steps):
            loss = task.loss(meta_head(features, batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if self.head_tolerance > 0:  # every process reads the same loss: the same head everywhere
                value = float(to_host(loss.detach().float()))
                if previous is not None and abs(previous - value) < self.head_tolerance:
                    break
                previous = value
        with torch.no_grad():
            self._head_losses["train"] = task.loss(meta_head(features, batch), batch)
        return meta_head

    def other_batch(self, task, inputs: StepInputs, split: str, size: int | None = None
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Features (a forward pass without gradients) of an end-task batch of `split` drawn by
        (seed, step) from a shuffle of its own, so it is rarely the step's train batch or the dev
        gradient's dev batch: a meta head fit on the very batch whose gradient the dev gradient is
        compared with pushed the end task's cosine negative (-0.21 against -0.05 on ACL-ARC,
        benchmarks/meta_head_probe.py). Every process draws and encodes the whole batch, so all
        train the same head. `size`: its rows (default: a train batch's, or a dev batch's)."""
        size = size or (task.batch_size if split == "train" else self.dev_batch_size)
        update = inputs.step // self.update_every
        per_epoch = len(task.shuffled_batches(split, 0, size))
        epoch, offset = divmod(update, per_epoch)
        indices = task.shuffled_batches(split, stable_seed("meta head", self.seed, epoch), size)[offset]
        batch = to_device(task.collate(split, indices), inputs.accelerator.device)
        with torch.no_grad(), inputs.accelerator.autocast():
            return inputs.model.encode(batch), batch

    def dev_batch(self, task, inputs: StepInputs) -> tuple[dict[str, torch.Tensor], float]:
        """The dev set in length-bucketed batches, one per update, cycling through epochs of it (a
        random dev batch pads every example to its longest one, which made the dev gradient cost as
        much as the three task gradients together); this process's rows and their loss share."""
        update = inputs.step // self.update_every
        per_epoch = len(task.shuffled_batches("dev", 0, self.dev_batch_size))
        epoch, offset = divmod(update, per_epoch)
        indices = task.shuffled_batches("dev", epoch, self.dev_batch_size)[offset]
        accelerator = inputs.accelerator
        world = accelerator.num_processes
        rows, units = collate_own_rows(task, "dev", indices, 0, accelerator.process_index, world)
        share = 1.0 if world == 1 else loss_share(task.loss_units(rows), units, world)
        return to_device(rows, accelerator.device), share

    def state_dict(self) -> dict:
        return {"logits": self.logits.tolist(), "cosines": self.cosines, "meta_head_losses": self.meta_head_losses}

    def load_state_dict(self, state: dict) -> None:
        if "logits" in state:
            self.logits = torch.tensor(state["logits"], dtype=torch.float64)
            self.cosines = state.get("cosines", {})
            self.meta_head_losses = state.get("meta_head_losses", {})


@contextmanager
def _gradients_into(body: list, views: list[torch.Tensor]):
    """While inside, autograd adds the body's gradients into `views` (their .grad point at them);
    the .grad there before (the loop's, if any: the mix is added to them) come back after."""
    before = [p.grad for p in body]
    for p, view in zip(body, views):
        p.grad = view
    try:
        yield
    finally:
        for p, grad in zip(body, before):
            p.grad = grad


def _views(flat: torch.Tensor, params: list) -> list[torch.Tensor]:
    """`flat` cut into tensors shaped like `params`, sharing its memory."""
    views, offset = [], 0
    for p in params:
        views.append(flat[offset:offset + p.numel()].view_as(p))
        offset += p.numel()
    return views


def _concatenated(views: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, dict]:
    """The micro-batches' head views as one batch's (their rows are padded alike: head_view)."""
    if len(views) == 1:
        return views[0]
    return (torch.cat([features for features, _ in views]),
            {key: torch.cat([batch[key] for _, batch in views]) for key in views[0][1]})


def _gather_rows(features: torch.Tensor, batch: dict, accelerator, global_rows: int) -> tuple[torch.Tensor, dict]:
    """The global batch from every process's rows of it. Processes may hold different numbers of rows
    (16 on 3, an epoch's short last batch): each pads its rows to the most any holds (every process
    knows every process's count on the host) and keeps the real rows after the gather. The other
    dimensions are alike in every process (the head reads one token a row). A batch with fewer rows
    than processes is whole in each already."""
    world = accelerator.num_processes
    if global_rows < world:
        return features, batch
    counts = rows_per_process(global_rows, world)
    most = max(counts)
    keep = torch.tensor([rank * most + i for rank, count in enumerate(counts) for i in range(count)])
    keep = keep.to(features.device, non_blocking=True)

    def gathered(tensor: torch.Tensor) -> torch.Tensor:
        if len(tensor) < most:
            tensor = torch.cat([tensor, tensor.new_zeros((most - len(tensor), *tensor.shape[1:]))])
        return accelerator.gather(tensor.contiguous()).index_select(0, keep)

    return gathered(features), {key: gathered(value) for key, value in batch.items()}
