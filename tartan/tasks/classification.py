"""Single-label classification of a text (or text pair) from a labelled task folder."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.batching import collate, fraction_of_rows, sorted_batches, to_device
from ..data.encoding import encode
from ..data.known_tasks import default_metric
from ..data.labelled import LabelledTask, load_labelled_task
from ..models.heads import ClassificationHead
from ..training.metrics import classification_metrics
from . import LengthBucketed, evaluate_in_one_process, task_settings, task_types


@torch.no_grad()
def logits_of(model: nn.Module, head: str, encoded, pad_id: int, num_labels: int, batch_size: int,
              autocast) -> np.ndarray:
    """The `head`'s logits for every encoded example, in their order (batches sorted by length, so
    that little is padded)."""
    logits = np.zeros((len(encoded), num_labels), dtype=np.float32)
    batches = sorted_batches(encoded.lengths, batch_size)
    if batches:
        logits[np.concatenate(batches)] = logits_of_batches(model, head, encoded, pad_id, batches, autocast)
    return logits


@torch.no_grad()
def logits_of_batches(model: nn.Module, head: str, encoded, pad_id: int, batches: list[np.ndarray],
                      autocast) -> np.ndarray:
    """The `head`'s logits for the examples of `batches`, in the batches' order, fp32 on the host."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs = []  # left on the device and read once: a read per batch would wait on each
    for indices in batches:
        with autocast():
            outputs.append(model(head, to_device(collate(encoded, indices, pad_id), device)).float())
    model.train(was_training)
    return torch.cat(outputs).cpu().numpy() if outputs else np.zeros((0, 0), dtype=np.float32)


@task_types.register("classification")
class ClassificationTask(LengthBucketed):
    """Single-label classification; also the base of the other types that read a text (or pair) and
    a label per row (regression), which change the label, the head's outputs, the loss and the metrics."""

    reads_end_task = False  # the folder of its own name
    metrics = ("macro_f1", "micro_f1", "accuracy")  # what `metric` may select on
    scores = False  # labels are names (a vocabulary from train), not numbers

    @classmethod
    def claims(cls, row: dict) -> bool:
        """Whether a row of a task's train file has this type's layout (labelled_kind); the
        fallback for every other labelled task."""
        return True

    def __init__(self, data: LabelledTask, tokenizer, *, max_length: int, batch_size: int,
                 eval_batch_size: int, seed: int, bucket_batches: int = 50, head_dropout: float = 0.1,
                 metric: str | None = None, cache: Path | None = None, scale_loss: bool = False,
                 train_fraction: float = 1.0):
        self.name = data.name
        self.data = data
        self.label_names = data.label_names
        self.metric = metric or self.default_metric(data.name)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.bucket_batches, self.head_dropout = seed, bucket_batches, head_dropout
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.encoded = {split: encode(tokenizer, s.texts, s.text_pairs, max_length, s.digest, cache)
                        for split, s in data.splits.items()}
        # keys a reusable stage trained on this task (MUPPET's): changed files are another stage
        self.digest = hashlib.sha256("|".join(f"{split}:{s.digest}" for split, s in sorted(data.splits.items()))
                                     .encode()).hexdigest()
        self.labels = {split: self.label_array(data, split) for split in data.splits}
        self._lengths = {split: e.lengths for split, e in self.encoded.items()}
        self.train_rows = fraction_of_rows(len(self.labels["train"]), train_fraction, seed)
        self.loss_scale = self.chance_loss() ** -1 if scale_loss else 1.0

    @staticmethod
    def default_metric(name: str) -> str:
        return default_metric(name)

    def label_array(self, data: LabelledTask, split: str) -> np.ndarray:
        return np.asarray(data.label_ids(split), dtype=np.int64)

    def chance_loss(self) -> float:
        """The loss of a prediction that knows nothing: MUPPET divides each task's loss by it, so
        that such a prediction costs 1 in every task. Here log(C), of a uniform prediction."""
        return math.log(len(self.label_names))

    @property
    def num_outputs(self) -> int:
        return len(self.label_names)

    @classmethod
    def from_config(cls, name: str, config, tokenizer, **options) -> "ClassificationTask":
        """The task folder `name` of config.data_dir, read, checked and tokenised (cached); `options`
        (a stage's) override the train section's batch sizes, seed and head dropout."""
        from ..config import cache_dir

        data = load_labelled_task(config.data_dir, name, scores=cls.scores)
        return cls(data, tokenizer, **task_settings(config, name, options),
                   metric=config.metric if name == config.end_task and config.metric in cls.metrics else None,
                   cache=cache_dir(), **options)

    @property
    def splits(self) -> list[str]:
        return list(self.encoded)

    def num_examples(self, split: str) -> int:
        return len(self.labels[split])

    def make_head(self, body: nn.Module) -> nn.Module:
        return ClassificationHead(body.config.hidden_size, self.num_outputs, self.head_dropout)

    def head_meta(self) -> dict:
        return {"type": "classification", "labels": self.label_names, "dropout": self.head_dropout,
                "pairs": self.has_pairs}

    @property
    def has_pairs(self) -> bool:
        """Whether the task's rows are text pairs: what `tartan predict` must be given too."""
        return self.data.splits["train"].text_pairs is not None

    @staticmethod
    def head_from_meta(hidden_size: int, meta: dict) -> nn.Module:
        """The head a finished run saved with `meta` (its weights are loaded next)."""
        return ClassificationHead(hidden_size, len(meta["labels"]), meta.get("dropout", 0.1))

    def collate(self, split: str, indices: np.ndarray, draw: int = 0,
                batch_of: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        return collate(self.encoded[split], indices, self.pad_id, self.labels[split])

    def global_loss_units(self, split: str, indices: np.ndarray, draw: int = 0) -> int:
        return len(indices)

    def head_view(self, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """What the head and the loss read of a batch: the first token's vector, the labels."""
        return features[:, :1], {"labels": batch["labels"]}

    def loss(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(output.float(), batch["labels"]) * self.loss_scale

    def prediction_logits(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [output]

    def loss_units(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["labels"])

    def predict_logits(self, model: nn.Module, split: str, autocast) -> tuple[np.ndarray, np.ndarray]:
        """Logits of every example of `split`, in file order, and the gold labels."""
        logits = logits_of(model, self.name, self.encoded[split], self.pad_id, self.num_outputs,
                           self.eval_batch_size, autocast)
        return logits, self.labels[split]

    def eval_outputs(self, model: nn.Module, split: str, numbers: list[int], autocast) -> tuple[np.ndarray, np.ndarray]:
        """The logits of the evaluation batches `numbers`, with the examples they belong to."""
        every = self.eval_batches(split)  # sorted once, not once per batch
        batches = [every[k] for k in numbers]
        if not batches:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.num_outputs), dtype=np.float32)
        return np.concatenate(batches), logits_of_batches(model, self.name, self.encoded[split], self.pad_id,
                                                          batches, autocast)

    def eval_metrics(self, split: str, outputs: list) -> dict[str, float]:
        """The metrics of `split` from the eval_outputs of all its batches, in any grouping."""
        logits = np.zeros((self.num_examples(split), self.num_outputs), dtype=np.float32)
        for indices, part in outputs:
            logits[indices] = part
        return self.metrics_of(logits, self.labels[split])

    def metrics_of(self, logits: np.ndarray, gold: np.ndarray) -> dict[str, float]:
        """The metrics of the head's outputs for every example of a split against its labels."""
        metrics = classification_metrics(gold, logits.argmax(-1))
        metrics["loss"] = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(gold)))
        return metrics

    @staticmethod
    def prediction(outputs: np.ndarray, meta: dict) -> dict:
        """What `tartan predict` writes for one example, from the head's outputs and its meta."""
        probabilities = np.exp(outputs - outputs.max())
        probabilities /= probabilities.sum()
        best = int(outputs.argmax())
        return {"label": meta["labels"][best], "probability": round(float(probabilities[best]), 6)}

    def evaluate(self, model: nn.Module, split: str, autocast) -> dict[str, float]:
        return evaluate_in_one_process(self, model, split, autocast)
