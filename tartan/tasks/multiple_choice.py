"""Multiple choice (CommonsenseQA, COPA): a context and a list of choices per row, `label` the index
of the right one. Each choice is read paired with the context (and the row's `question`, COPA's
"cause" or "effect", appended to the context); the head scores every pair from its first token, and
the loss is the cross-entropy of the softmax over a row's choices (MUPPET's sentence-ranking loss);
accuracy. Every row of a task has the same number of choices."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.batching import collate, fraction_of_rows, to_device
from ..data.encoding import encode
from ..data.labelled import SPLITS, LabelledSplit, file_digest, split_file
from ..data.readers import read_rows
from ..errors import TartanError
from ..models.heads import ClassificationHead
from . import LengthBucketed, evaluate_in_one_process, labelled_folder, task_settings, task_types


class MultipleChoiceHead(ClassificationHead):
    """The classification head with one output, a score per (context, choice) pair, the scores of a
    row's choices side by side. Takes the body's output for every pair, or (4D: rows x choices x 1 x
    hidden) the first-token vectors alone (META's meta head gathers only those)."""

    def __init__(self, hidden_size: int, choices: int, dropout: float = 0.1):
        super().__init__(hidden_size, 1, dropout)
        self.choices = choices

    def forward(self, hidden_states: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        if hidden_states.dim() == 4:
            hidden_states = hidden_states.flatten(0, 1)
        return super().forward(hidden_states, batch).view(-1, self.choices)


def read_choices(path: Path, choices: int | None = None,
                 labelled: bool = True) -> tuple[list[str], list[list[str]], list[int]]:
    """(first segments, choices, labels) of a multiple-choice split file, checked; without labels
    (`labelled=False`, rows to predict) the labels are all 0."""
    firsts, options, labels = [], [], []
    for line, row in read_rows(path):
        context, given = row.get("context"), row.get("choices")
        if not isinstance(context, str) or not context.strip():
            raise TartanError("field 'context' must be a non-empty string", path, line)
        if not isinstance(given, list) or len(given) < 2 or not all(isinstance(c, str) and c.strip() for c in given):
            raise TartanError("field 'choices' must be a list of at least two non-empty strings", path, line)
        choices = len(given) if choices is None else choices
        if len(given) != choices:
            raise TartanError(f"{len(given)} choices where the task's rows have {choices}", path, line)
        label = row.get("label") if labelled else 0
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < choices:
            raise TartanError(f"field 'label' must be the index of a choice (0 to {choices - 1}), got {label!r}",
                              path, line)
        question = row.get("question")
        if question is not None and not isinstance(question, str):
            raise TartanError(f"field 'question' must be a string, got {question!r}", path, line)
        firsts.append(f"{context} {question}" if question else context)
        options.append(given)
        labels.append(label)
    return firsts, options, labels


@task_types.register("multiple_choice")
class MultipleChoiceTask(LengthBucketed):
    reads_end_task = False
    metric = "accuracy"
    metrics = ("accuracy",)

    @classmethod
    def claims(cls, row: dict) -> bool:
        return "choices" in row

    def __init__(self, name: str, folder: Path, tokenizer, *, max_length: int, batch_size: int, eval_batch_size: int,
                 seed: int, bucket_batches: int = 50, head_dropout: float = 0.1, cache: Path | None = None,
                 scale_loss: bool = False, train_fraction: float = 1.0):
        self.name, self.seed, self.head_dropout = name, seed, head_dropout
        self.batch_size, self.eval_batch_size, self.bucket_batches = batch_size, eval_batch_size, bucket_batches
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.encoded, self.labels, self._lengths, digests = {}, {}, {}, []
        self.choices = None
        for split in SPLITS:
            path = split_file(folder, split)
            if path is None:
                if split in ("train", "dev"):
                    raise TartanError(f"no {split} file (expected {split}.jsonl, .csv or .tsv)", folder)
                continue
            firsts, options, labels = read_choices(path, self.choices)
            self.choices = len(options[0])
            digest = f"{file_digest(path)}:choices"  # its token cache: pairs of context and choice
            digests.append(f"{split}:{digest}")
            # pair i * choices + c: row i's context with its choice c
            self.encoded[split] = encode(tokenizer, [f for f in firsts for _ in range(self.choices)],
                                         [c for row in options for c in row], max_length, digest, cache)
            self.labels[split] = np.asarray(labels, dtype=np.int64)
            self._lengths[split] = self.encoded[split].lengths.reshape(-1, self.choices).max(1)
        self.train_rows = fraction_of_rows(len(self.labels["train"]), train_fraction, seed)
        self.digest = hashlib.sha256("|".join(digests).encode()).hexdigest()
        # MUPPET: divided by log(choices), a uniform guess costs 1, as in a classification task
        self.loss_scale = 1 / math.log(self.choices) if scale_loss else 1.0

    @classmethod
    def from_config(cls, name: str, config, tokenizer, **options) -> "MultipleChoiceTask":
        from ..config import cache_dir

        return cls(name, labelled_folder(config.data_dir, name), tokenizer, **task_settings(config, name, options),
                   cache=cache_dir(), **options)

    @staticmethod
    def train_texts(folder: Path) -> LabelledSplit:
        """The train rows as text (TAPT's corpus): each row's context followed by its choices."""
        path = split_file(folder, "train")
        if path is None:
            raise TartanError("no train file (expected train.jsonl, .csv or .tsv)", folder)
        firsts, options, labels = read_choices(path)
        return LabelledSplit(path=path, digest=f"{file_digest(path)}:choices",
                             texts=[" ".join([first, *row]) for first, row in zip(firsts, options)],
                             text_pairs=None, labels=[str(label) for label in labels])

    @property
    def splits(self) -> list[str]:
        return list(self.encoded)

    def num_examples(self, split: str) -> int:
        return len(self.labels[split])

    def make_head(self, body: nn.Module) -> nn.Module:
        return MultipleChoiceHead(body.config.hidden_size, self.choices, self.head_dropout)

    @staticmethod
    def head_from_meta(hidden_size: int, meta: dict) -> nn.Module:
        return MultipleChoiceHead(hidden_size, meta["choices"], meta.get("dropout", 0.1))

    def head_meta(self) -> dict:
        return {"type": "multiple_choice", "choices": self.choices, "dropout": self.head_dropout}

    def collate(self, split: str, indices: np.ndarray, draw: int = 0,
                batch_of: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Rows x choices pairs (row-major), and a label per row."""
        pairs = (np.asarray(indices)[:, None] * self.choices + np.arange(self.choices)).reshape(-1)
        batch = collate(self.encoded[split], pairs, self.pad_id)
        batch["labels"] = torch.from_numpy(self.labels[split][indices])
        return batch

    def loss(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(output.float(), batch["labels"]) * self.loss_scale

    def prediction_logits(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [output]  # a row's scores of its choices

    def loss_units(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["labels"])

    def global_loss_units(self, split: str, indices: np.ndarray, draw: int = 0) -> int:
        return len(indices)

    def head_view(self, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """Each row's first-token vectors, one per choice, and its label (rows first, for gathering)."""
        return features[:, :1].reshape(-1, self.choices, 1, features.shape[-1]), {"labels": batch["labels"]}

    @torch.no_grad()
    def eval_outputs(self, model: nn.Module, split: str, numbers: list[int], autocast) -> tuple[np.ndarray, np.ndarray]:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        every = self.eval_batches(split)  # sorted once, not once per batch
        batches = [every[k] for k in numbers]
        scores = []
        for indices in batches:
            with autocast():
                scores.append(model(self.name, to_device(self.collate(split, indices), device)).float())
        model.train(was_training)
        if not batches:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.choices), dtype=np.float32)
        return np.concatenate(batches), torch.cat(scores).cpu().numpy()

    def eval_metrics(self, split: str, outputs: list) -> dict[str, float]:
        scores = np.zeros((self.num_examples(split), self.choices), dtype=np.float32)
        for indices, part in outputs:
            scores[indices] = part
        gold = self.labels[split]
        return {"accuracy": float((scores.argmax(-1) == gold).mean()),
                "loss": float(F.cross_entropy(torch.from_numpy(scores), torch.from_numpy(gold)))}

    def evaluate(self, model: nn.Module, split: str, autocast) -> dict[str, float]:
        return evaluate_in_one_process(self, model, split, autocast)


@torch.no_grad()
def predict_choices(model: nn.Module, head: str, tokenizer, path: Path, choices: int, max_length: int,
                    batch_size: int, autocast) -> list[dict]:
    """The best choice of each row of `path` (context, choices, optional question) and its
    probability, for `tartan predict`."""
    from ..data.encoding import encode

    firsts, options, _ = read_choices(path, choices, labelled=False)
    encoded = encode(tokenizer, [f for f in firsts for _ in range(choices)], [c for row in options for c in row],
                     max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    device = next(model.parameters()).device
    predictions = []
    for begin in range(0, len(firsts), batch_size):
        rows = np.arange(begin, min(begin + batch_size, len(firsts)))
        pairs = (rows[:, None] * choices + np.arange(choices)).reshape(-1)
        with autocast():
            scores = model(head, to_device(collate(encoded, pairs, pad_id), device)).float()
        probabilities = torch.softmax(scores, -1).cpu().numpy()
        predictions += [{"choice": int(p.argmax()), "probability": round(float(p.max()), 6)} for p in probabilities]
    return predictions
