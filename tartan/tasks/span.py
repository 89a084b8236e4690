"""Extractive question answering (SQuAD's layout: `question`, `context`, `answers: {text,
answer_start}`): the answer is a span of the context. A long context is read in overlapping windows
(`stride` tokens shared between neighbours); the head gives every token a start and an end logit,
and the loss is the mean of the cross-entropies of the start and of the end position (a window
without the answer points both at its first token, as in the BERT paper's SQuAD 2.0 recipe). An
example's answer is the best-scoring span over all its windows, mapped back to text through the
tokenizer's offsets; exact match and F1 are computed as the SQuAD v1.1 evaluation script does (the
best over the gold answers, after lower-casing and removing punctuation, articles and extra spaces)."""
from __future__ import annotations

import collections
import hashlib
import math
import re
import string
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.batching import fraction_of_rows, to_device
from ..data.labelled import SPLITS, LabelledSplit, file_digest, split_file
from ..data.readers import read_rows
from ..errors import TartanError, first_line
from . import LengthBucketed, evaluate_in_one_process, labelled_folder, task_settings, task_types

MAX_ANSWER_TOKENS = 30  # the longest span considered, as the SQuAD recipes of BERT and RoBERTa


class SpanHead(nn.Module):
    """A start and an end logit for every token (Linear(H, 2), as AutoModelForQuestionAnswering)."""

    def __init__(self, hidden_size: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.qa_outputs = nn.Linear(hidden_size, 2)

    def forward(self, hidden_states: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        return self.qa_outputs(self.dropout(hidden_states))  # rows x tokens x (start, end)


def read_questions(path: Path) -> list[dict]:
    """The rows of a split, checked: every answer is its text at its answer_start in the context."""
    rows = []
    for line, row in read_rows(path):
        for key in ("question", "context"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise TartanError(f"field {key!r} must be a non-empty string", path, line)
        answers = row.get("answers")
        texts, starts = (answers.get("text"), answers.get("answer_start")) if isinstance(answers, dict) else (None, None)
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts) or not texts:
            raise TartanError("field 'answers' must be {text: [...], answer_start: [...]} of equal, non-zero lengths",
                              path, line)
        for text, start in zip(texts, starts):
            if not isinstance(text, str) or isinstance(start, bool) or not isinstance(start, int):
                raise TartanError(f"an answer must be a text and an integer start, got {text!r} at {start!r}", path, line)
            if row["context"][start:start + len(text)] != text:
                raise TartanError(f"answer {text!r} is not at its answer_start {start} in the context (found "
                                  f"{row['context'][start:start + len(text)]!r})", path, line)
        rows.append({"question": row["question"], "context": row["context"], "answers": texts, "starts": starts,
                     "line": line})
    return rows


@task_types.register("span")
class SpanTask(LengthBucketed):
    reads_end_task = False
    metric = "f1"
    metrics = ("f1", "exact_match")

    @classmethod
    def claims(cls, row: dict) -> bool:
        return "answers" in row

    def __init__(self, name: str, folder: Path, tokenizer, *, max_length: int, batch_size: int, eval_batch_size: int,
                 seed: int, bucket_batches: int = 50, head_dropout: float = 0.1, stride: int = 64,
                 scale_loss: bool = False, train_fraction: float = 1.0):
        if not getattr(tokenizer, "is_fast", False):
            raise TartanError("extractive QA maps answers through the tokenizer's offsets: it needs a fast tokenizer")
        self.name, self.seed, self.head_dropout, self.max_length = name, seed, head_dropout, max_length
        self.batch_size, self.eval_batch_size, self.bucket_batches = batch_size, eval_batch_size, bucket_batches
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.rows, self.windows, digests = {}, {}, []
        for split in SPLITS:
            path = split_file(folder, split)
            if path is None:
                if split in ("train", "dev"):
                    raise TartanError(f"no {split} file (expected {split}.jsonl)", folder)
                continue
            self.rows[split] = read_questions(path)
            try:
                # neighbouring windows share a quarter of the window at most
                self.windows[split] = self._windows(tokenizer, self.rows[split], max_length, min(stride, max_length // 4),
                                                    path)
            except ValueError as error:  # a question that leaves no room for its context, among others
                raise TartanError(f"cannot read it in windows of data.max_length={max_length} tokens: "
                                  f"{first_line(error)}", path) from None
            digests.append(f"{split}:{file_digest(path)}")
        self.digest = hashlib.sha256("|".join(digests).encode()).hexdigest()
        # token lengths of each split's windows, what batches are bucketed and sorted by
        self._lengths = {split: np.fromiter((len(w["input_ids"]) for w in windows), dtype=np.int64)
                         for split, windows in self.windows.items()}
        train = self.windows["train"]
        # a fraction of the questions, every window of each
        questions = fraction_of_rows(len(self.rows["train"]), train_fraction, seed)
        self.train_rows = None if questions is None else np.flatnonzero(
            np.isin([w["example"] for w in train], questions))
        # MUPPET's scaling: a start and an end drawn uniformly among a window's context tokens cost
        # log(n) each; n is the mean number of context tokens of the train windows
        context_tokens = float(np.mean([sum(1 for s in w["sequence"] if s == 1) for w in train]))
        self.loss_scale = 1 / math.log(max(context_tokens, 2.0)) if scale_loss else 1.0

    @staticmethod
    def _windows(tokenizer, rows: list[dict], max_length: int, stride: int, path: Path | None = None) -> list[dict]:
        """Every example's windows: token ids, type ids, offsets, which tokens are the context's, and
        the first answer's token positions (both 0 where the window does not hold it). A question
        too long to leave its context more room than the windows' overlap is an error naming its line
        (`path`, row["line"]), which the tokenizer would otherwise raise as a panic of its own."""
        specials = tokenizer.num_special_tokens_to_add(pair=True)
        most = max_length - specials - stride - 1
        questions = tokenizer([r["question"] for r in rows], add_special_tokens=False)["input_ids"]
        for row, question in zip(rows, questions):
            if len(question) > most:
                raise TartanError(f"the question is {len(question)} tokens; windows of data.max_length={max_length} "
                                  f"tokens, with {specials} special tokens and an overlap of {stride}, leave room for "
                                  f"{max(most, 0)} at most", path, row.get("line"))
        encoded = tokenizer([r["question"] for r in rows], [r["context"] for r in rows], truncation="only_second",
                            max_length=max_length, stride=stride, return_overflowing_tokens=True,
                            return_offsets_mapping=True)
        windows = []
        for i, example in enumerate(encoded["overflow_to_sample_mapping"]):
            sequence = encoded.sequence_ids(i)
            offsets = encoded["offset_mapping"][i]
            row = rows[example]
            start = end = 0
            context = [t for t, s in enumerate(sequence) if s == 1]
            first, last = (row["starts"][0], row["starts"][0] + len(row["answers"][0])) if row.get("answers") else (-1, -1)
            if context and first >= 0 and offsets[context[0]][0] <= first and offsets[context[-1]][1] >= last:
                start = next(t for t in context if offsets[t][1] > first)
                end = next(t for t in reversed(context) if offsets[t][0] < last)
            windows.append({"example": example, "input_ids": np.asarray(encoded["input_ids"][i], dtype=np.int64),
                            "token_type_ids": np.asarray(encoded["token_type_ids"][i], dtype=np.int64)
                            if "token_type_ids" in encoded else None,
                            "offsets": offsets, "sequence": sequence, "start": start, "end": end})
        return windows

    @classmethod
    def from_config(cls, name: str, config, tokenizer, **options) -> "SpanTask":
        return cls(name, labelled_folder(config.data_dir, name), tokenizer, **task_settings(config, name, options), **options)

    @staticmethod
    def train_texts(folder: Path) -> LabelledSplit:
        """The train rows as text (TAPT's corpus): each question and its context."""
        path = split_file(folder, "train")
        if path is None:
            raise TartanError("no train file (expected train.jsonl)", folder)
        rows = read_questions(path)
        return LabelledSplit(path=path, digest=f"{file_digest(path)}:questions",
                             texts=[f"{r['question']} {r['context']}" for r in rows], text_pairs=None,
                             labels=[r["answers"][0] for r in rows])

    @property
    def splits(self) -> list[str]:
        return list(self.rows)

    def num_examples(self, split: str) -> int:
        return len(self.windows[split])  # what batches are made of: windows

    def make_head(self, body: nn.Module) -> nn.Module:
        return SpanHead(body.config.hidden_size, self.head_dropout)

    def head_meta(self) -> dict:
        return {"type": "span", "dropout": self.head_dropout}

    @staticmethod
    def head_from_meta(hidden_size: int, meta: dict) -> nn.Module:
        return SpanHead(hidden_size, meta.get("dropout", 0.1))

    def collate(self, split: str, indices: np.ndarray, draw: int = 0, batch_of=None,
                width: int | None = None) -> dict[str, torch.Tensor]:
        windows = [self.windows[split][i] for i in indices]
        width = width or max(len(w["input_ids"]) for w in windows)
        ids = np.full((len(windows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(windows), width), dtype=np.int64)
        types = np.zeros((len(windows), width), dtype=np.int64)
        for j, w in enumerate(windows):
            ids[j, :len(w["input_ids"])] = w["input_ids"]
            mask[j, :len(w["input_ids"])] = 1
            if w["token_type_ids"] is not None:
                types[j, :len(w["input_ids"])] = w["token_type_ids"]
        batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
                 "start_positions": torch.tensor([w["start"] for w in windows]),
                 "end_positions": torch.tensor([w["end"] for w in windows])}
        if windows[0]["token_type_ids"] is not None:
            batch["token_type_ids"] = torch.from_numpy(types)
        return batch

    def loss(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        start, end = self.prediction_logits(output, batch)
        return (F.cross_entropy(start, batch["start_positions"])
                + F.cross_entropy(end, batch["end_positions"])) / 2 * self.loss_scale

    def prediction_logits(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The start's and the end's logits over the tokens. Padding is no position: masked, nothing
        depends on how wide a batch is padded (each process pads its own windows)."""
        logits = output.float().masked_fill(~batch["attention_mask"].bool()[..., None], -1e9)
        return [logits[..., 0], logits[..., 1]]

    def loss_units(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["start_positions"])

    def global_loss_units(self, split: str, indices: np.ndarray, draw: int = 0) -> int:
        return len(indices)

    def head_view(self, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """Every token's vector (the head reads them all) and the attention mask, padded to
        max_length so that processes holding windows of other widths can gather them; the answer
        positions."""
        width = self.max_length - features.shape[1]
        return F.pad(features, (0, 0, 0, width)), {"attention_mask": F.pad(batch["attention_mask"], (0, width)),
                                                   "start_positions": batch["start_positions"],
                                                   "end_positions": batch["end_positions"]}

    @torch.no_grad()
    def eval_outputs(self, model: nn.Module, split: str, numbers: list[int], autocast) -> list[tuple[int, float, str]]:
        """The best span of each window scored here: (example, score, answer text)."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        every = self.eval_batches(split)  # sorted once, not once per batch
        batches = [every[k] for k in numbers]
        outputs = []
        for indices in batches:
            with autocast():
                logits = model(self.name, to_device(self.collate(split, indices), device)).float().cpu().numpy()
            for j, i in enumerate(indices):
                outputs.append(self._best_span(split, int(i), logits[j]))
        model.train(was_training)
        return outputs

    def _best_span(self, split: str, index: int, logits: np.ndarray) -> tuple[int, float, str]:
        window = self.windows[split][index]
        return best_span(window, self.rows[split][window["example"]]["context"], logits)

    def eval_metrics(self, split: str, outputs: list) -> dict[str, float]:
        answers: dict[int, tuple[float, str]] = {}
        for part in outputs:
            for example, score, text in part:
                if example not in answers or score > answers[example][0]:
                    answers[example] = (score, text)
        rows = self.rows[split]
        exact = [max(exact_match(answers.get(i, (0, ""))[1], gold) for gold in row["answers"]) for i, row in enumerate(rows)]
        f1 = [max(f1_score(answers.get(i, (0, ""))[1], gold) for gold in row["answers"]) for i, row in enumerate(rows)]
        return {"f1": float(np.mean(f1)), "exact_match": float(np.mean(exact))}

    def evaluate(self, model: nn.Module, split: str, autocast) -> dict[str, float]:
        return evaluate_in_one_process(self, model, split, autocast)


def best_span(window: dict, context_text: str, logits: np.ndarray) -> tuple[int, float, str]:
    """(example, score, text) of the window's best span: start and end among the context's tokens,
    start <= end, at most MAX_ANSWER_TOKENS long, the highest start + end logit. Every pair is
    scored, as the question-answering pipeline does, not only the 20 best starts and ends: with
    flat logits the best pair can lie outside those."""
    tokens = np.arange(len(window["sequence"]))
    context = np.array([s == 1 for s in window["sequence"]])
    allowed = (context[:, None] & context[None, :] & (tokens[None, :] >= tokens[:, None])
               & (tokens[None, :] < tokens[:, None] + MAX_ANSWER_TOKENS))
    if not allowed.any():
        return window["example"], -np.inf, ""
    width = len(tokens)  # the logits may be padded past the window
    scores = np.where(allowed, logits[:width, 0][:, None] + logits[:width, 1][None, :], -np.inf)
    start, end = np.unravel_index(np.argmax(scores), scores.shape)
    return (window["example"], float(scores[start, end]),
            context_text[window["offsets"][start][0]:window["offsets"][end][1]])


@torch.no_grad()
def predict_answers(model: nn.Module, head: str, tokenizer, rows: list[dict], max_length: int, batch_size: int,
                    autocast, stride: int = 64, path: Path | None = None) -> list[dict]:
    """The answer to each row's question in its context (the best span over its windows) and its
    score (start + end logit), for `tartan predict`; `path` (and each row's "line") name a row
    whose question is too long for the windows."""
    windows = SpanTask._windows(tokenizer, rows, max_length, min(stride, max_length // 4), path)
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    best: dict[int, tuple[float, str]] = {}
    for begin in range(0, len(windows), batch_size):
        part = windows[begin:begin + batch_size]
        width = max(len(w["input_ids"]) for w in part)
        ids = torch.full((len(part), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(part), width), dtype=torch.long)
        types = torch.zeros((len(part), width), dtype=torch.long)
        for j, w in enumerate(part):
            ids[j, :len(w["input_ids"])] = torch.from_numpy(w["input_ids"])
            mask[j, :len(w["input_ids"])] = 1
            if w["token_type_ids"] is not None:
                types[j, :len(w["input_ids"])] = torch.from_numpy(w["token_type_ids"])
        batch = {"input_ids": ids, "attention_mask": mask}
        if part[0]["token_type_ids"] is not None:
            batch["token_type_ids"] = types
        with autocast():
            logits = model(head, to_device(batch, device)).float().cpu().numpy()
        for j, w in enumerate(part):
            example, score, text = best_span(w, rows[w["example"]]["context"], logits[j])
            if example not in best or score > best[example][0]:
                best[example] = (score, text)
    # a context with no token to answer from (control characters alone) has no span: null, not
    # -Infinity, which is no JSON
    found = [best.get(i, (-np.inf, "")) for i in range(len(rows))]
    return [{"answer": text, "score": round(float(score), 6) if np.isfinite(score) else None} for score, text in found]


def normalize_answer(text: str) -> str:
    """The SQuAD v1.1 script's: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = collections.Counter(predicted) & collections.Counter(expected)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)
