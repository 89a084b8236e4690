"""Batching schemes: which tasks each step draws, as a pure function of the seed."""
from __future__ import annotations

from collections import Counter

import pytest

from tartan.errors import TartanError
from tartan.training.sampling import Schedule, steps_per_epoch

SIZES = {"a": 100, "b": 300, "c": 600}
PER_EPOCH = {"a": 7, "b": 19, "c": 38}


def schedule(scheme, steps=20_000, **options):
    return Schedule(scheme, list(SIZES), SIZES, PER_EPOCH, steps, {"tasks_per_update": 4, "seed": 0, **options})


def test_natural_sampling_matches_the_sizes_on_a_large_draw():
    plan = schedule("heterogeneous")
    counts = Counter(name for step in range(20_000) for name, _ in plan.at(step))
    total = sum(counts.values())
    for name, size in SIZES.items():
        assert counts[name] / total == pytest.approx(size / 1000, abs=0.01)


def test_uniform_sampling_draws_tasks_equally():
    plan = schedule("heterogeneous", sampling="uniform")
    counts = Counter(name for step in range(20_000) for name, _ in plan.at(step))
    assert max(counts.values()) / min(counts.values()) < 1.05


def test_each_task_numbers_its_batches_in_order_and_the_seed_decides():
    plan = schedule("heterogeneous", steps=500)
    seen: dict[str, list[int]] = {}
    for step in range(500):
        draws = plan.at(step)
        assert len(draws) == 4
        for name, number in draws:
            seen.setdefault(name, []).append(number)
    assert all(numbers == list(range(len(numbers))) for numbers in seen.values())
    assert [plan.at(s) for s in range(50)] == [schedule("heterogeneous", steps=500).at(s) for s in range(50)]
    assert [plan.at(s) for s in range(50)] != [schedule("heterogeneous", steps=500, seed=1).at(s) for s in range(50)]


def test_batch_homogeneous_steps_hold_one_task_and_dataset_homogeneous_goes_task_by_task():
    plan = schedule("batch_homogeneous", steps=200)
    assert all(len({name for name, _ in plan.at(s)}) == 1 for s in range(200))
    plan = schedule("dataset_homogeneous", steps=40)
    order = [name for s in range(40) for name, _ in plan.at(s)]
    assert order[:7] == ["a"] * 7 and order[7:26] == ["b"] * 19 and order[26:64] == ["c"] * 38 and order[64] == "a"


def test_all_gives_every_task_the_step_and_counts_epochs_on_the_first():
    plan = Schedule("all", list(SIZES), {}, PER_EPOCH, 10, {})
    assert plan.at(3) == [("a", 3), ("b", 3), ("c", 3)]
    assert steps_per_epoch("all", list(SIZES), PER_EPOCH, {}) == 7
    assert steps_per_epoch("heterogeneous", list(SIZES), PER_EPOCH, {"tasks_per_update": 4}) == 16  # ceil(64 / 4)


def test_unknown_scheme_is_an_error():
    with pytest.raises(TartanError, match="unknown batching scheme 'mixed'"):
        schedule("mixed", steps=2)


def test_probabilities_are_the_train_sizes_share_or_equal():
    from tartan.training.sampling import task_probabilities

    assert task_probabilities(list(SIZES), SIZES, "natural").tolist() == pytest.approx([0.1, 0.3, 0.6])
    assert task_probabilities(list(SIZES), SIZES, "uniform").tolist() == pytest.approx([1 / 3] * 3)


def test_four_batches_an_update_unless_told_otherwise():
    for scheme in ("heterogeneous", "batch_homogeneous", "dataset_homogeneous"):
        plan = Schedule(scheme, list(SIZES), SIZES, PER_EPOCH, 30, {})
        assert all(len(plan.at(s)) == 4 for s in range(30)), scheme
        plan = Schedule(scheme, list(SIZES), SIZES, PER_EPOCH, 30, {"tasks_per_update": 3})
        assert all(len(plan.at(s)) == 3 for s in range(30)), scheme
    assert steps_per_epoch("heterogeneous", list(SIZES), PER_EPOCH, {}) == 16
    assert steps_per_epoch("batch_homogeneous", list(SIZES), PER_EPOCH, {"tasks_per_update": 3}) == 22  # ceil(64 / 3)


def test_an_epoch_is_at_least_one_step():
    assert steps_per_epoch("heterogeneous", ["a"], {"a": 1}, {"tasks_per_update": 4}) == 1
    assert steps_per_epoch("heterogeneous", ["a", "b"], {"a": 4, "b": 1}, {"tasks_per_update": 4}) == 2


def test_dataset_homogeneous_numbers_each_tasks_batches_through_its_epochs():
    plan = Schedule("dataset_homogeneous", ["a", "b"], {"a": 1, "b": 1}, {"a": 3, "b": 2}, 4, {"tasks_per_update": 2})
    assert [plan.at(s) for s in range(4)] == [[("a", 0), ("a", 1)], [("a", 2), ("b", 0)], [("b", 1), ("a", 3)],
                                              [("a", 4), ("a", 5)]]


def test_the_draws_of_a_seed_are_pinned():
    """Which batches a MUPPET stage draws is part of a published run (and of resume): change only deliberately.
    No seed in the options is seed 0."""
    plan = Schedule("heterogeneous", list(SIZES), SIZES, PER_EPOCH, 3, {"tasks_per_update": 3})
    assert [plan.at(s) for s in range(3)] == [[("c", 0), ("c", 1), ("a", 0)], [("c", 2), ("b", 0), ("a", 1)],
                                              [("b", 1), ("c", 3), ("c", 4)]]
    plan = Schedule("batch_homogeneous", list(SIZES), SIZES, PER_EPOCH, 4, {"tasks_per_update": 2, "seed": 1})
    assert [plan.at(s) for s in range(4)] == [[("c", 0), ("c", 1)], [("b", 0), ("b", 1)], [("c", 2), ("c", 3)],
                                              [("c", 4), ("c", 5)]]
