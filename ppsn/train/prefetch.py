"""Batches on the devices ahead of use: a background thread reads the Grain iterator and puts
each batch on the devices (``prepare``, e.g. ``parallel.to_global``) while the device computes
earlier steps, keeping ``size`` (>= 2) global batches ready.

The Grain iterator runs ahead of the step that is being computed, so its live state is not the
position of the run. Each batch carries the iterator's state right after it was read:
``position()`` is the state after the last batch handed out, what a checkpoint must save
(``grain.checkpoint.CheckpointSave(prefetcher.position())``) for a resumed run to continue with
the next batch. ``wait_s`` is the time the consumer spent waiting for data.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any, Callable, Iterator

_END = object()


class Position:
    """An iterator state, saved by ``grain.checkpoint.CheckpointSave`` like the iterator."""

    def __init__(self, state: bytes | dict):
        self.state = state

    def get_state(self) -> bytes:
        if isinstance(self.state, bytes):
            return self.state
        return json.dumps(self.state, indent=4).encode()


class DevicePrefetcher:
    """``next()`` gives ``prepare(host batch)`` for the batches of ``iterator``, in order."""

    def __init__(self, iterator: Iterator, prepare: Callable[[Any], Any], size: int = 2):
        if size < 1:
            raise ValueError(f"prefetch size must be >= 1, got {size}")
        self._iterator, self._prepare = iterator, prepare
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._state = iterator.get_state()
        self.wait_s = 0.0
        self._thread = threading.Thread(target=self._fill, name="ppsn-device-prefetch",
                                        daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self):
        try:
            while not self._stop.is_set():
                try:
                    host = next(self._iterator)
                except StopIteration:
                    self._put((_END, None))
                    return
                state = self._iterator.get_state()
                if not self._put((self._prepare(host), state)):
                    return
        except BaseException as e:  # handed to the consumer, raised there
            self._put((e, None))

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        item, state = self._queue.get()
        self.wait_s += time.perf_counter() - start
        if item is _END:
            self._queue.put((_END, None))  # stays exhausted
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        self._state = state
        return item

    def position(self) -> Position:
        """The iterator's state after the last batch ``next()`` returned."""
        return Position(self._state)

    def close(self):
        """Stops the thread (the batches it read ahead are dropped)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
