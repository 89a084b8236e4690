"""Several processes without DDP: every process takes its rows of the same global batch, and
gradients are averaged explicitly. The weighting strategies need each task's gradient averaged
across processes *before* they mix them (META-TARTAN's cosines), which DDP's one fused backward
cannot give; averaging ourselves keeps one code path for every strategy and every launcher.
A process's loss is a mean over its own units (rows; masked tokens for MLM), which differ between
processes (an odd batch, a different number of masked tokens): `loss_share` weighs each
process's loss so that the average of the processes' gradients is the gradient of the global mean."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import TartanError
from .device import to_host


def own_indices(indices: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This process's contiguous rows of a global batch. A batch with fewer rows than processes is
    kept whole by every process: the average of equal gradients is that gradient."""
    if world == 1 or len(indices) < world:
        return indices
    counts = rows_per_process(len(indices), world)
    start = sum(counts[:rank])
    return indices[start:start + counts[rank]]


def collate_own_rows(task, split: str, indices: np.ndarray, draw: int, rank: int,
                     world: int) -> tuple[dict[str, torch.Tensor], int]:
    """This process's rows of the global batch `indices`, collated alone (padded to their own
    longest), with the fields its task derives from them on the host (`host_fields`: a masked-LM
    task's selected positions); and the loss units of the global batch as the processes hold it,
    known here without the other rows being collated or any process asked."""
    rows = task.collate(split, own_indices(indices, rank, world), draw=draw, batch_of=indices)
    derive = getattr(task, "host_fields", None)
    rows = derive(rows) if derive is not None else rows
    if world == 1:
        return rows, task.loss_units(rows)
    units = task.global_loss_units(split, indices, draw)
    return rows, units * world if len(indices) < world else units


def rows_per_process(rows: int, world: int) -> list[int]:
    """How many of a global batch's rows each process holds (own_indices): known to every process."""
    if rows < world:
        return [rows] * world
    return [len(part) for part in np.array_split(np.arange(rows), world)]


def loss_share(own_units: int, global_units: int, world: int) -> float:
    """processes x this process's share of the loss units (`task.loss_units`) of what the loss is a
    mean over: the factor on this process's mean loss under which the average of the processes'
    gradients is the gradient of the global mean. Counted on the host, where every process collates
    the whole global batch, so that no process waits on another (or on its device) to learn it."""
    return own_units * world / max(global_units, 1)


class PendingAverage:
    """An all-reduce under way (asynchronous): `wait()` leaves the mean over processes in the
    tensor it was started on and returns it. What is sent is a copy in the reduce dtype where that
    differs, summed in that precision."""

    def __init__(self, tensor: torch.Tensor, accelerator, dtype: torch.dtype | None = None):
        self.tensor, self.world = tensor, accelerator.num_processes
        self.sent = tensor if dtype is None or dtype == tensor.dtype else tensor.to(dtype)
        self.work = (torch.distributed.all_reduce(self.sent, op=torch.distributed.ReduceOp.SUM, async_op=True)
                     if self.world > 1 else None)

    def wait(self) -> torch.Tensor:
        if self.work is not None:
            self.work.wait()
            if self.sent is not self.tensor:
                self.tensor.copy_(self.sent)
            self.tensor /= self.world
            self.work = None
        return self.tensor


def average_across_processes(tensor: torch.Tensor, accelerator, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Mean over processes, in place; a no-op for one process. `dtype` (bf16): what is sent, half
    the bytes of fp32 gradients."""
    return PendingAverage(tensor, accelerator, dtype).wait()


def average_list_across_processes(tensors: list[torch.Tensor], accelerator,
                                  dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """Mean over processes of each tensor, in one flat all-reduce; the same list for one process.
    The means are views of one new buffer: autograd's outputs may be expanded (stride-0) tensors that
    cannot be written into."""
    if accelerator.num_processes == 1:
        return tensors
    flat = average_across_processes(torch.cat([t.reshape(-1) for t in tensors]), accelerator, dtype)
    return views_of(flat, tensors)


def views_of(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    """`flat` cut into tensors shaped like those of `like`, sharing its memory."""
    views, offset = [], 0
    for t in like:
        views.append(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()
    return views


def average_gradients(params, accelerator, dtype: torch.dtype | None = None) -> None:
    """Average the .grad of `params` (a module's, or a list) across processes in one flat all-reduce.
    A parameter no process has a gradient for keeps none, so that the optimizer skips it as it would
    in one process."""
    if accelerator.num_processes == 1:
        return
    params = [p for p in (params.parameters() if isinstance(params, torch.nn.Module) else params) if p.requires_grad]
    if not params:
        return
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=accelerator.device)
    torch.distributed.all_reduce(has_grad, op=torch.distributed.ReduceOp.MAX)
    params = [p for p, flag in zip(params, to_host(has_grad).tolist()) if flag]
    if not params:
        return
    for p in params:
        if p.grad is None:  # this process's batch did not reach it: its share is zero
            p.grad = torch.zeros_like(p)
    for p, mean in zip(params, average_list_across_processes([p.grad for p in params], accelerator, dtype)):
        p.grad.copy_(mean)


def gathered(value, accelerator) -> list:
    """Every process's `value` (any picklable object), by rank; [value] for one process."""
    if accelerator.num_processes == 1:
        return [value]
    values = [None] * accelerator.num_processes
    torch.distributed.all_gather_object(values, value)
    return values


def decided_by_main(value, accelerator):
    """The main process's `value` in every process: a decision (improved, stop, checkpoint now)
    taken once, so that a numeric difference between processes can never send one down another
    path and leave the others waiting in a collective."""
    if accelerator.num_processes == 1:
        return value
    holder = [value]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]


def on_main(compute, accelerator):
    """compute() run by the main process alone, its result in every process: what the run directory
    or the stage store holds (resume, reuse, finished) is read once, so that processes cannot see it
    differently. A TartanError there is raised in every process, so none is left waiting."""
    if accelerator.num_processes == 1:
        return compute()
    outcome = None
    if accelerator.is_main_process:
        try:
            outcome = ("result", compute())
        except TartanError as error:
            outcome = ("error", (error.message, error.path, error.line))
    kind, value = decided_by_main(outcome, accelerator)
    if kind == "error":
        raise TartanError(*value)
    return value


def reduce_dtype(name: str) -> torch.dtype | None:
    """The dtype gradients are sent in between processes (train.reduce_dtype); None: their own."""
    return torch.bfloat16 if name == "bf16" else None
