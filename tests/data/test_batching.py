"""tartan.data.batching: bucketed training batches (complete, reproducible, little padding), sorted
evaluation batches, and collate's padding and attention mask."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tartan.data.batching import bucketed_batches, collate, sorted_batches
from tartan.data.encoding import Encoded


def random_lengths(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 257, size=n)


def padded_tokens(lengths: np.ndarray, batches: list[np.ndarray]) -> int:
    """Tokens computed on padding: every row padded to its batch's longest."""
    return int(sum(lengths[b].max() * len(b) - lengths[b].sum() for b in batches))


def assert_partition(batches: list[np.ndarray], n: int, batch_size: int) -> None:
    flat = np.concatenate(batches)
    assert len(flat) == n and sorted(flat.tolist()) == list(range(n))
    assert all(1 <= len(b) <= batch_size for b in batches)


@pytest.mark.parametrize("n, batch_size, bucket_batches", [(1000, 16, 50), (1000, 16, 3), (37, 8, 2),
                                                           (5, 16, 50), (1, 4, 1), (64, 8, 1)])
def test_bucketed_batches_cover_every_index_once_per_epoch(n, batch_size, bucket_batches):
    lengths = random_lengths(n)
    for epoch in range(3):
        batches = bucketed_batches(lengths, batch_size, seed=1, epoch=epoch, bucket_batches=bucket_batches)
        assert_partition(batches, n, batch_size)


def test_bucketed_batches_are_a_pure_function_of_seed_and_epoch():
    lengths = random_lengths(800)

    def run(seed, epoch):
        return [b.tolist() for b in bucketed_batches(lengths, 16, seed=seed, epoch=epoch, bucket_batches=10)]

    assert run(0, 0) == run(0, 0)
    assert run(3, 2) == run(3, 2)
    assert run(0, 0) != run(0, 1)  # another epoch: another order
    assert run(0, 0) != run(1, 0)  # another seed: another order
    assert len({str(run(0, e)) for e in range(5)}) == 5


def test_bucketed_batches_do_not_depend_on_global_random_state():
    lengths = random_lengths(300)
    np.random.seed(1)
    a = [b.tolist() for b in bucketed_batches(lengths, 16, seed=0, epoch=0)]
    np.random.seed(2)
    np.random.rand(10)
    b = [b.tolist() for b in bucketed_batches(lengths, 16, seed=0, epoch=0)]
    assert a == b


def test_bucketed_batches_pad_less_than_random_batches():
    lengths = random_lengths(3000, seed=7)
    batch_size = 16
    bucketed = bucketed_batches(lengths, batch_size, seed=0, epoch=0, bucket_batches=50)
    order = np.random.default_rng(0).permutation(len(lengths))
    random_batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    bucketed_pad, random_pad = padded_tokens(lengths, bucketed), padded_tokens(lengths, random_batches)
    assert bucketed_pad < 0.2 * random_pad
    # while the batch order is still shuffled (not sorted by length overall)
    maxima = [int(lengths[b].max()) for b in bucketed]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


def test_larger_buckets_pad_less():
    lengths = random_lengths(3000, seed=8)
    pads = [padded_tokens(lengths, bucketed_batches(lengths, 16, seed=0, epoch=0, bucket_batches=k))
            for k in (1, 5, 50)]
    assert pads[0] > pads[1] > pads[2]


@pytest.mark.parametrize("n, batch_size", [(100, 16), (16, 16), (3, 8), (1, 1)])
def test_sorted_batches_cover_everything_in_length_order(n, batch_size):
    lengths = random_lengths(n, seed=n)
    batches = sorted_batches(lengths, batch_size)
    assert_partition(batches, n, batch_size)
    flat = np.concatenate(batches)
    assert np.all(np.diff(lengths[flat]) >= 0)
    assert all(len(b) == batch_size for b in batches[:-1])


def make_encoded(lengths, with_types=False, seed=0) -> Encoded:
    rng = np.random.default_rng(seed)
    ids = [rng.integers(10, 100, size=n).astype(np.int32) for n in lengths]
    types = [np.concatenate([np.zeros(n // 2, np.int8), np.ones(n - n // 2, np.int8)]) for n in lengths] \
        if with_types else None
    return Encoded(ids, types)


@pytest.mark.parametrize("pad_id", [0, 1, 7])
def test_collate_pads_with_pad_id_and_masks_exactly_the_real_tokens(pad_id):
    encoded = make_encoded([5, 2, 9, 1])
    indices = np.array([2, 0, 3])
    batch = collate(encoded, indices, pad_id)
    assert set(batch) == {"input_ids", "attention_mask"}
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape == (3, 9) and ids.dtype == mask.dtype == torch.int64
    for row, i in enumerate(indices):
        n = len(encoded.input_ids[i])
        assert ids[row, :n].tolist() == encoded.input_ids[i].tolist()
        assert ids[row, n:].tolist() == [pad_id] * (9 - n)
        assert mask[row].tolist() == [1] * n + [0] * (9 - n)
    assert int(mask.sum()) == 9 + 5 + 1


def test_collate_token_types_labels_and_opt_out():
    encoded = make_encoded([4, 6, 3], with_types=True)
    labels = np.array([2, 0, 1])
    indices = np.array([1, 2])
    batch = collate(encoded, indices, pad_id=0, labels=labels)
    assert batch["labels"].tolist() == [0, 1] and batch["labels"].dtype == torch.int64
    types = batch["token_type_ids"]
    assert types.shape == (2, 6)
    assert types[0].tolist() == [0, 0, 0, 1, 1, 1]
    assert types[1].tolist() == [0, 1, 1, 0, 0, 0]  # padding is segment 0
    assert "token_type_ids" not in collate(encoded, indices, 0, with_token_types=False)


def test_collate_width_is_the_longest_in_the_batch_not_overall():
    encoded = make_encoded([50, 3, 4])
    batch = collate(encoded, np.array([1, 2]), pad_id=0)
    assert batch["input_ids"].shape == (2, 4)
