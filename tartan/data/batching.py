"""Length-bucketed batches with dynamic padding: sort by length within large shuffled chunks, so that
a batch holds similar lengths (little compute on padding) while the order stays random."""
from __future__ import annotations

import numpy as np
import torch

from .encoding import Encoded


def bucketed_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
                     bucket_batches: int = 50, rows: np.ndarray | None = None) -> list[np.ndarray]:
    """Training batches of one epoch; a pure function of (seed, epoch) so a resumed run sees the
    very batches an uninterrupted one would. `rows`: only these rows (all by default)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)) if rows is None else np.asarray(rows)[rng.permutation(len(rows))]
    chunk = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def fraction_of_rows(count: int, fraction: float, seed: int) -> np.ndarray | None:
    """A fixed random `fraction` of `count` rows (at least one), in order, drawn by `seed` alone, so
    that two methods run with one seed train on the same examples; None for all of them."""
    if fraction >= 1:
        return None
    keep = max(1, round(fraction * count))
    return np.sort(np.random.default_rng([seed, 0x7A57]).choice(count, keep, replace=False))


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches: every example once, fully sorted by length."""
    order = np.argsort(lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def collate(encoded: Encoded, indices: np.ndarray, pad_id: int, labels: np.ndarray | None = None,
            with_token_types: bool = True) -> dict[str, torch.Tensor]:
    rows = [encoded.input_ids[i] for i in indices]
    width = max(len(r) for r in rows)
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)
    for j, row in enumerate(rows):
        input_ids[j, :len(row)] = row
        attention_mask[j, :len(row)] = 1
    batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
    if with_token_types and encoded.token_type_ids is not None:
        type_ids = np.zeros((len(rows), width), dtype=np.int64)
        for j, i in enumerate(indices):
            type_ids[j, :len(encoded.token_type_ids[i])] = encoded.token_type_ids[i]
        batch["token_type_ids"] = torch.from_numpy(type_ids)
    if labels is not None:
        batch["labels"] = torch.from_numpy(np.asarray(labels[indices]))  # class ids, or scores
    return batch


def pin(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch in page-locked memory, from which a copy to a GPU need not wait for the host."""
    return {key: value.pin_memory() for key, value in batch.items()}


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}
