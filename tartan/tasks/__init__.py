"""Task types keyed by name (jiant-style): a task type knows its data, builds its head, turns a
batch into a loss and evaluates itself. Add a task type: one file here with `@task_types.register`."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..data.batching import bucketed_batches, sorted_batches
from ..registry import Registry


class Task(Protocol):
    """Built by `from_config(name, config, tokenizer, **options)`, options coming from the method."""

    name: str
    seed: int  # orders its batches and draws anything random in them; a checkpoint records it
    metric: str  # the dev metric that selects checkpoints when this is the end task
    metrics: tuple[str, ...]  # class attribute: those `metric` (config) may choose, for an end task
    # class attribute: whether its data depends on the end task (MLM text sampled to a multiple of
    # |Train|, or the end task's own text); a sweep tells shared pre-training stages apart by it
    reads_end_task: bool

    def make_head(self, body: nn.Module) -> nn.Module: ...  # the body: a head may tie weights to it
    def train_batches(self, epoch: int) -> list[np.ndarray]: ...
    # draw: the step the batch is drawn for; seeds anything random in it (e.g. MLM masks), so that
    # every draw differs and a resumed run draws exactly what an uninterrupted one would. A process
    # collates only its rows of a global batch (`batch_of`): a row must come out the same whichever
    # rows it is collated with
    def collate(self, split: str, indices: np.ndarray, draw: int = 0,
                batch_of: np.ndarray | None = None) -> dict[str, torch.Tensor]: ...
    def loss(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...
    # what loss() averages over in this batch (rows, masked tokens): processes holding unequal
    # shares of a global batch weigh their losses by it (training/distributed.py)
    def loss_units(self, batch: dict[str, torch.Tensor]) -> int: ...
    # the same for the global batch `indices` as collate would draw it, without collating it
    def global_loss_units(self, split: str, indices: np.ndarray, draw: int = 0) -> int: ...
    # evaluation in batches that processes share out (training/evaluation.py): each scores some,
    # what they output is gathered, and the metrics are computed once from all of it
    def eval_batches(self, split: str) -> list[np.ndarray]: ...
    def eval_outputs(self, model: nn.Module, split: str, numbers: list[int], autocast) -> object: ...  # picklable
    def eval_metrics(self, split: str, outputs: list) -> dict[str, float]: ...
    def evaluate(self, model: nn.Module, split: str, autocast) -> dict[str, float]: ...  # in this process alone
    def head_meta(self) -> dict: ...
    # optional, for R3F: prediction_logits(output, batch) -> the logits of the categorical
    # distributions the head's output holds, each over its last axis, padding masked ([] for none)
    # optional: host_fields(batch) -> batch, fields derived on the host from this process's rows of a
    # collated batch (a masked-LM task's selected positions), so that the device never has to decide
    # a shape from its own values (training/distributed.py: collate_own_rows)
    # optional, for an end task of META-TARTAN: head_view(features, batch) -> (features, batch), what
    # its head and loss read of a batch (processes gather that alone for the meta head)


def evaluate_in_one_process(task: Task, model: nn.Module, split: str, autocast) -> dict[str, float]:
    """The metrics of `split`, every batch scored here."""
    return task.eval_metrics(split, [task.eval_outputs(model, split, range(len(task.eval_batches(split))), autocast)])


task_types: Registry = Registry("task type")


class LengthBucketed:
    """The batching the labelled task types share: rows of known token lengths (`_lengths`, per
    split), training epochs length-bucketed and shuffled by (seed, epoch) over `train_rows` (the
    end task's share of its train set; None: every row), evaluation batches fully sorted."""

    _lengths: dict[str, np.ndarray]
    train_rows: np.ndarray | None = None

    def train_batches(self, epoch: int) -> list[np.ndarray]:
        return self.shuffled_batches("train", epoch, self.batch_size)

    def shuffled_batches(self, split: str, epoch: int, batch_size: int) -> list[np.ndarray]:
        """An epoch of `split` in length-bucketed batches, shuffled by (seed, epoch)."""
        return bucketed_batches(self._lengths[split], batch_size, self.seed, epoch, self.bucket_batches,
                                self.train_rows if split == "train" else None)

    def eval_batches(self, split: str) -> list[np.ndarray]:
        """The evaluation of `split` in batches (sorted by length), which processes can share out."""
        return sorted_batches(self._lengths[split], self.eval_batch_size)


def labelled_folder(data_dir, name: str) -> Path:
    """The folder of labelled task `name` in data_dir, which must exist."""
    from ..data.labelled import check_task_name
    from ..errors import TartanError

    check_task_name(name)
    folder = Path(data_dir) / name
    if not folder.is_dir():
        raise TartanError("task folder not found", folder)
    return folder


def task_settings(config, name: str, options: dict) -> dict:
    """Labelled task `name`'s sequence length, batching, seed, head dropout and share of its train
    set: the train section's, unless the stage's `options` set them (taken out of `options`, which
    keep the rest). Only the end task trains on a fraction (data.train_fraction)."""
    return {"max_length": config.data.max_length, "bucket_batches": config.data.bucket_batches,
            "batch_size": options.pop("batch_size", config.train.batch_size),
            "eval_batch_size": options.pop("eval_batch_size", config.train.eval_batch_size),
            "seed": options.pop("seed", config.seed),
            "head_dropout": options.pop("head_dropout", config.train.head_dropout),
            "train_fraction": config.data.train_fraction if name == config.end_task else 1.0}


def task_kind(config, name: str) -> str:
    """The type of labelled task `name`: `tasks.NAME.type` where the config gives it, else read from
    its data (labelled_kind)."""
    from ..errors import TartanError

    given = config.tasks.get(name)
    if given is not None and given.type is not None:
        labelled = [kind for kind in task_types.names() if kind != "mlm"]
        if given.type not in labelled:
            raise TartanError(f"tasks.{name}.type must be one of {', '.join(labelled)}, got {given.type!r}")
        return given.type
    return labelled_kind(config.data_dir, name)


def own_texts(config, name: str):
    """The train split of task `name` as unlabelled text (TAPT's corpus): `.texts`, `.digest`,
    `.path`, and its length. A task type with rows of another layout says what its text is
    (`train_texts`); otherwise the rows' `text`."""
    from ..data.labelled import load_labelled_task

    kind = task_types.get(task_kind(config, name))
    if hasattr(kind, "train_texts"):
        return kind.train_texts(Path(config.data_dir) / name)
    return load_labelled_task(config.data_dir, name, splits=("train",),
                              scores=getattr(kind, "scores", False)).splits["train"]


def labelled_kind(data_dir, name: str) -> str:
    """The type of the labelled task folder `data_dir/name`, read from the layout of its first train
    row: the first registered type other than classification that claims it (a score: regression),
    else classification. A missing folder or file is left for the task's own reader to report."""
    from ..data.labelled import check_task_name, split_file
    from ..data.readers import read_rows

    check_task_name(name)
    folder = Path(data_dir) / name if data_dir is not None else None
    path = split_file(folder, "train") if folder is not None and folder.is_dir() else None
    if path is None:
        return "classification"
    for _, row in read_rows(path):
        for kind in task_types.names():
            claims = getattr(task_types.get(kind), "claims", None)
            if kind != "classification" and claims is not None and claims(row):
                return kind
        break
    return "classification"

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
