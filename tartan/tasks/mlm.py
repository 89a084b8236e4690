"""Masked-LM on unlabelled text: the end task's own train texts (`source: task`, TAPT) or a text
file (`path: ...`, relative to data_dir or absolute; DAPT), optionally cut to `size` (`1x`, `10x`
|Train| or a line count). A share of the lines is held out for evaluation (loss, perplexity,
masked-token accuracy)."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.batching import bucketed_batches, collate, sorted_batches, to_device
from ..data.encoding import encode
from ..data.labelled import file_digest
from ..data.masking import IGNORE, mask_tokens, select_tokens
from ..data.unlabelled import parse_size, read_texts, sample_texts
from ..errors import TartanError
from ..models.body import resolve_model_path
from ..models.mlm_head import load_mlm_head
from . import evaluate_in_one_process, own_texts, task_types

HELDOUT_SEED = 1234  # fixed held-out masks: MLM evaluations are comparable across steps and runs


@task_types.register("mlm")
class MaskedLMTask:
    metric = "accuracy"  # masked-token accuracy on the held-out lines
    reads_end_task = True  # source: task, and sizes given as multiples of the end task's train set

    def __init__(self, name: str, texts: list[str], digest: str, tokenizer, *, max_length: int, batch_size: int,
                 eval_batch_size: int, seed: int, data_seed: int | None = None, bucket_batches: int = 50, probability: float = 0.15,
                 whole_word: bool = False, heldout: float = 0.05, model_path: str | None = None,
                 cache: Path | None = None):
        if tokenizer.mask_token_id is None:
            raise TartanError("the tokenizer has no mask token: it cannot train a masked-LM objective")
        # seed: batch order and training masks; data_seed: which lines are held out and their masks,
        # so that the held-out figures of runs with different seeds measure the same thing
        self.name, self.seed = name, seed
        self.data_seed = seed if data_seed is None else data_seed
        self.batch_size, self.eval_batch_size, self.bucket_batches = batch_size, eval_batch_size, bucket_batches
        self.probability, self.whole_word, self.model_path = probability, whole_word, model_path
        self.mask_id, self.vocab_size = tokenizer.mask_token_id, len(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.special = torch.zeros(max(self.vocab_size, max(tokenizer.all_special_ids) + 1), dtype=torch.bool)
        self.special[tokenizer.all_special_ids] = True
        encoded = encode(tokenizer, texts, None, max_length, digest, cache, words=whole_word)
        order = np.random.default_rng([self.data_seed, 7]).permutation(len(encoded))
        n_heldout = min(len(order) - 1, max(1, int(round(heldout * len(order))))) if heldout > 0 else 0
        self.rows = {"dev": np.sort(order[:n_heldout]), "train": np.sort(order[n_heldout:])}
        self.encoded, self.digest = encoded, digest
        self.lengths = encoded.lengths
        self.num_texts = len(texts)

    @classmethod
    def from_config(cls, name: str, config, tokenizer, source: str | None = None, path: str | None = None,
                    size: str | int | None = None, **options) -> "MaskedLMTask":
        if (source is None) == (path is None):
            raise TartanError(f"masked-LM task {name!r} needs either source: task or path: FILE")
        end_train = own_texts(config, config.end_task)
        if source is not None:
            if source != "task":
                raise TartanError(f"masked-LM source must be 'task' (the end task's train texts), got {source!r}")
            texts, digest, where = end_train.texts, end_train.digest, str(end_train.path)
        else:
            file = Path(path) if Path(path).is_absolute() else Path(config.data_dir) / path
            texts, digest, where = read_texts(file), file_digest(file), str(file)
        count = parse_size(size, len(end_train))
        # the sample depends on the pre-training seed, not the fine-tuning one: seeds share the stage
        texts = sample_texts(texts, count, config.pretrain.seed, where)
        if count is not None:
            digest = f"{digest}:{count}:{config.pretrain.seed}"
        mlm = config.mlm
        # a pre-training stage orders and masks by the pre-training seed (seeds share the stage); an
        # auxiliary objective of the multi-task stage passes the run's seed
        return cls(name, texts, digest, tokenizer, max_length=config.data.max_length,
                   batch_size=options.pop("batch_size", config.pretrain.batch_size),
                   eval_batch_size=config.pretrain.eval_batch_size, seed=options.pop("seed", config.pretrain.seed),
                   data_seed=config.pretrain.seed,
                   bucket_batches=config.data.bucket_batches, probability=mlm.probability,
                   whole_word=mlm.whole_word, heldout=mlm.heldout, model_path=resolve_model_path(config.model),
                   cache=_cache(), **options)

    @property
    def splits(self) -> list[str]:
        return ["train", "dev"] if len(self.rows["dev"]) else ["train"]

    def make_head(self, body: nn.Module) -> nn.Module:
        head, _ = load_mlm_head(body, self.model_path)
        # random replacements must be rows of the embedding matrix, which may be smaller than the
        # tokenizer when tokens were added to it
        self.vocab_size = min(self.vocab_size, head.decoder_weight.shape[0])
        return head

    def head_meta(self) -> dict:
        return {"type": "mlm", "probability": self.probability, "whole_word": self.whole_word}

    def train_batches(self, epoch: int) -> list[np.ndarray]:
        rows = self.rows["train"]
        return [rows[b] for b in bucketed_batches(self.lengths[rows], self.batch_size, self.seed, epoch,
                                                  self.bucket_batches)]

    def collate(self, split: str, indices: np.ndarray, draw: int = 0, full_logits: bool = False,
                batch_of: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Rows `indices` with fresh masks. Each row's are drawn by a generator of its own, seeded by
        (seed, draw, split, line): every draw masks anew, a resumed run masks exactly as an
        uninterrupted one, and a row is masked alike whichever process collates it, with whichever
        other rows (each process collates only its own rows of a global batch). `batch_of`: the
        global batch the rows belong to (default: they are it); if no row of it draws a mask, its
        first maskable token is scored."""
        batch = collate(self.encoded, indices, self.pad_id, with_token_types=False)
        ids = batch["input_ids"]
        masked, labels = ids.clone(), torch.full_like(ids, IGNORE)
        for j, i in enumerate(indices):
            width = len(self.encoded.input_ids[i])
            row_masked, row_labels = mask_tokens(ids[j:j + 1, :width], self._maskable(i), self.mask_id, self.vocab_size,
                                                 self._generator(split, draw, i), self.probability, self._word_ids(i))
            masked[j, :width], labels[j, :width] = row_masked[0], row_labels[0]
        if not (labels != IGNORE).any():
            scored = self._scored_alone(split, draw, indices if batch_of is None else batch_of)
            if scored is not None and scored[0] in indices:
                j, position = list(indices).index(scored[0]), scored[1]
                labels[j, position], masked[j, position] = ids[j, position], self.mask_id
        batch["input_ids"] = masked
        # labels stay one row per example (IGNORE where unselected), so that a batch can be split by
        # rows between processes; the head gathers the selected positions from them
        batch["mlm_full_labels" if full_logits else "mlm_labels"] = labels
        return batch

    def global_loss_units(self, split: str, indices: np.ndarray, draw: int = 0) -> int:
        """The masked tokens collate(indices, draw) holds, counted without collating: each process
        knows the loss units of a global batch of which it collates only its own rows."""
        count = sum(self._selected(split, draw, i) for i in indices)
        return count if count else int(self._scored_alone(split, draw, indices) is not None)

    def _generator(self, split: str, draw: int, line: int) -> torch.Generator:
        seed = self.data_seed if split == "heldout" else self.seed
        return torch.Generator().manual_seed(stable_seed(seed, draw, split, int(line)))

    def _maskable(self, line: int) -> torch.Tensor:
        ids = torch.from_numpy(self.encoded.input_ids[line].astype(np.int64))
        return ~self.special[ids][None]

    def _word_ids(self, line: int) -> torch.Tensor | None:
        return torch.from_numpy(self.encoded.word_ids[line].astype(np.int64))[None] if self.whole_word else None

    def _selected(self, split: str, draw: int, line: int) -> int:
        """How many tokens of the line collate selects (mask_tokens' first draw, from the same generator)."""
        maskable = self._maskable(line)
        return int(select_tokens(maskable, maskable, self._generator(split, draw, line), self.probability,
                                 self._word_ids(line)).sum())

    def _scored_alone(self, split: str, draw: int, lines: np.ndarray) -> tuple[int, int] | None:
        """(line, position) of the token a batch that draws no mask scores: the first maskable one
        of its first line that has one; None if a line draws a mask or nothing is maskable."""
        if any(self._selected(split, draw, i) for i in lines):
            return None
        for i in lines:
            maskable = self._maskable(i)[0]
            if maskable.any():
                return int(i), int(maskable.nonzero()[0])
        return None

    def host_fields(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The selected positions (flat, row-major) and their original tokens, computed on the host
        from this process's rows: on the device, choosing them would make it wait to learn how many."""
        if "mlm_labels" not in batch:
            return batch
        flat = batch["mlm_labels"].reshape(-1)
        positions = (flat != IGNORE).nonzero().squeeze(1)
        return {**batch, "mlm_positions": positions, "mlm_targets": flat[positions]}

    def loss(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "mlm_labels" in batch:
            targets = batch["mlm_targets"] if "mlm_targets" in batch else selected_targets(batch["mlm_labels"])
            if targets.numel() == 0:  # nothing maskable in the batch (all special tokens)
                return output.sum() * 0.0
            return F.cross_entropy(output.float(), targets)
        return F.cross_entropy(output.float().reshape(-1, output.shape[-1]), batch["mlm_full_labels"].reshape(-1),
                               ignore_index=IGNORE)

    def loss_units(self, batch: dict[str, torch.Tensor]) -> int:
        labels = batch["mlm_labels"] if "mlm_labels" in batch else batch["mlm_full_labels"]
        return int((labels != IGNORE).sum())

    def eval_batches(self, split: str) -> list[np.ndarray]:
        """The held-out lines (the train lines for split train) in batches sorted by length."""
        rows = self.rows["dev" if split != "train" else "train"]
        return [rows[b] for b in sorted_batches(self.lengths[rows], self.eval_batch_size)]

    @torch.no_grad()
    def eval_outputs(self, model: nn.Module, split: str, numbers: list[int], autocast) -> tuple[float, int, int]:
        """Summed loss, correct predictions and masked tokens of the evaluation batches `numbers`;
        batch k's masks are fixed by k, whichever process scores it."""
        was_training = model.training
        model.eval()
        total_loss, correct, count = 0.0, 0, 0
        device = next(model.parameters()).device
        batches = self.eval_batches(split)
        for k in numbers:
            batch = to_device(self.host_fields(self.collate("heldout", batches[k], draw=HELDOUT_SEED + k)), device)
            with autocast():
                logits = model(self.name, batch).float()
            targets = batch["mlm_targets"]
            # summed on the device, read once after the last batch
            total_loss = total_loss + F.cross_entropy(logits, targets, reduction="sum")
            correct = correct + (logits.argmax(-1) == targets).sum()
            count += len(targets)
        model.train(was_training)
        return float(total_loss), int(correct), count

    def eval_metrics(self, split: str, outputs: list) -> dict[str, float]:
        total_loss, correct, count = (sum(part[i] for part in outputs) for i in range(3))
        loss = total_loss / max(count, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "accuracy": correct / max(count, 1)}

    def evaluate(self, model: nn.Module, split: str, autocast) -> dict[str, float]:
        return evaluate_in_one_process(self, model, split, autocast)


def selected_targets(labels: torch.Tensor) -> torch.Tensor:
    """The original tokens at the selected positions, in the order the head scores them."""
    flat = labels.reshape(-1)
    return flat[flat != IGNORE]


def stable_seed(*parts) -> int:
    """A seed from its parts that is the same in every process (Python's hash() of a string is not)."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big") >> 1


def _cache() -> Path:
    from ..config import cache_dir

    return cache_dir()
