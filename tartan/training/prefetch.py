"""Batches prepared ahead: a background thread collates (and masks) the batches of the next steps,
into pinned memory when they are bound for a GPU, while the device computes the current one. What
it prepares is a pure function of the step, so that a resumed run trains on what an uninterrupted
one would whether or not anything was prepared ahead."""
from __future__ import annotations

import queue
import threading
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


class Prefetcher(Generic[T]):
    """`produce(step)` for step in [start, stop), up to `depth` steps ahead in a thread (depth 0:
    on the caller's thread, when asked for). An error while producing is raised where the step is
    taken. Use as a context manager, so that leaving the loop early stops the thread."""

    def __init__(self, produce: Callable[[int], T], start: int, stop: int, depth: int):
        self.produce, self.start, self.stop, self.depth = produce, start, stop, depth
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stopping = threading.Event()
        self._thread = None
        if depth > 0 and start < stop:
            self._thread = threading.Thread(target=self._fill, name="tartan-prefetch", daemon=True)
            self._thread.start()

    def _fill(self) -> None:
        try:
            for step in range(self.start, self.stop):
                item = self.produce(step)
                while not self._put(item):
                    if self._stopping.is_set():
                        return
        except BaseException as error:  # raised again on the training thread
            self._put_until_stopped(error)
            return
        self._put_until_stopped(_DONE)

    def _put(self, item) -> bool:
        try:
            self._queue.put(item, timeout=0.1)
            return True
        except queue.Full:
            return False

    def _put_until_stopped(self, item) -> None:
        while not self._put(item) and not self._stopping.is_set():
            pass

    def __iter__(self) -> Iterator[T]:
        if self._thread is None:
            for step in range(self.start, self.stop):
                yield self.produce(step)
            return
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
