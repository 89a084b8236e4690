"""Evaluation shared out between processes: each scores every world-th batch of the split (sorted by
length, so the shares cost about the same), the outputs are gathered, and the metrics are computed
once, by the main process, and broadcast: every process then holds the same figures, and no
decision taken on them can differ between processes."""
from __future__ import annotations

import torch

from .distributed import decided_by_main, gathered


def evaluate(task, model: torch.nn.Module, split: str, accelerator) -> dict[str, float]:
    """The metrics of `task` on `split`, the same in every process."""
    rank, world = accelerator.process_index, accelerator.num_processes
    numbers = list(range(len(task.eval_batches(split))))[rank::world]
    outputs = gathered(task.eval_outputs(model, split, numbers, accelerator.autocast), accelerator)
    metrics = task.eval_metrics(split, outputs) if accelerator.is_main_process else None
    return decided_by_main(metrics, accelerator)
