"""Batches prepared ahead in a thread: the same items in the same order, errors raised where the step
is taken, and the thread stopped when the loop leaves early."""
from __future__ import annotations

import threading

import pytest

from tartan.training.prefetch import Prefetcher


@pytest.mark.parametrize("depth", [0, 1, 4])
def test_items_come_in_step_order_from_start_to_stop(depth):
    with Prefetcher(lambda step: step * 10, 3, 9, depth) as ahead:
        assert list(ahead) == [30, 40, 50, 60, 70, 80]


def test_items_are_produced_on_another_thread_when_asked_to():
    threads = set()

    def produce(step):
        threads.add(threading.current_thread().name)
        return step

    with Prefetcher(produce, 0, 4, 2) as ahead:
        list(ahead)
    assert threads == {"tartan-prefetch"}


def test_an_error_while_producing_is_raised_where_its_step_is_taken():
    def produce(step):
        if step == 2:
            raise ValueError("bad line 7")
        return step

    seen = []
    with Prefetcher(produce, 0, 5, 2) as ahead, pytest.raises(ValueError, match="bad line 7"):
        for item in ahead:
            seen.append(item)
    assert seen == [0, 1]


def test_leaving_early_stops_the_thread_and_produces_no_further_than_the_depth():
    produced = []
    with Prefetcher(lambda step: produced.append(step) or step, 0, 1000, 2) as ahead:
        for item in ahead:
            if item == 3:
                break
        thread = ahead._thread
    assert not thread.is_alive()
    assert max(produced) <= 3 + 2 + 1  # the queue's depth, and one item waiting to be put
