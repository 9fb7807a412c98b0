"""Batches from worker processes to the main process through a shared-memory ring per worker.

Grain hands each array of a worker's batch over in a shared-memory segment of its own, made for
that batch and unlinked after it: every batch's pages are allocated and zeroed by the kernel in
the worker, mapped again in the main process and freed there. On this project's 2-core VM that
cost ~5 ms per 3.6 MB train batch (8 clips, ~18 ms to decode) and ~17 ms per 15.6 MB test video,
and ~16% of a core in the main process at 850 clips/s.

Here each worker process keeps one segment of ``slots`` fixed-size slots, made at its first
batch and reused: :func:`pack` (the last step of the worker's dataset) copies a batch's large
arrays into its lowest free slot and hands Grain a small description instead;
:meth:`Receiver.unpack` (the main process, as it takes the batch) gives arrays that are the
slot's memory, with no copy. So pages are faulted once per worker, not once per batch, and the
main process does no per-byte work (a copy out cost ~0.05 ms per train clip here, a third of the
main process's share; at 10,000 clips/s it would be ~4.5 GB/s of copying).

A slot is freed when nothing refers to its batch any more: not the batch's arrays, nor a view of
them, nor a JAX array that aliases them (JAX on CPU keeps a host array it aliases alive), so a
worker never overwrites memory in use. A consumer holds a few batches (the train loop: about
four), the ring has room for them above what Grain buffers; if a worker still finds no free
slot, its batch goes Grain's own way (nothing waits) and :meth:`Receiver.release_all` reports
how many did. Lowest-first means a slot that is never needed is never touched, and so takes no
memory. Segments are unlinked by :meth:`Receiver.release_all` when the iterator closes (arrays
still held stay readable; their memory goes with the last of them); a process killed before that
leaves them to Python's resource tracker, which unlinks them at exit.
"""

from __future__ import annotations

import ctypes
import logging
import math
import secrets
import threading
import weakref
from multiprocessing import shared_memory
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MARKER = "__ppsn_slot__"
ALIGN = 64
_FREE, _BUSY = 0, 1


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _large(value: Any, min_bytes: int) -> bool:
    return (isinstance(value, np.ndarray) and value.nbytes >= min_bytes
            and not value.dtype.hasobject and value.dtype.kind not in "US")


class _Ring:
    """A worker's segment: ``slots`` flags (one cache line each), then ``slots`` slots of
    ``slot_bytes``."""

    def __init__(self, slots: int, slot_bytes: int):
        self.slots, self.slot_bytes = slots, slot_bytes
        self.header = _aligned(slots * ALIGN)
        name = f"ppsn_{secrets.token_hex(6)}"
        self.shm = shared_memory.SharedMemory(name, create=True,
                                              size=self.header + slots * slot_bytes)
        self.lock = threading.Lock()  # threads of one worker (prefetch_batches > 0) share it

    def take(self) -> int | None:
        """The lowest free slot (marked busy), or None if every slot is taken: the main process
        still holds that many of this worker's batches, so this worker is ahead and its batch
        may go Grain's way. Lowest first: a slot's pages are touched only if ever needed."""
        flags = self.shm.buf
        with self.lock:
            for slot in range(self.slots):
                if flags[slot * ALIGN] == _FREE:
                    flags[slot * ALIGN] = _BUSY
                    return slot
        return None

    def put(self, slot: int, arrays: dict[str, np.ndarray]) -> list:
        refs, offset = [], self.header + slot * self.slot_bytes
        for key, array in arrays.items():
            view = np.ndarray(array.shape, array.dtype, buffer=self.shm.buf, offset=offset)
            np.copyto(view, array, casting="no")
            refs.append((key, offset, array.shape, array.dtype.str))
            offset += _aligned(array.nbytes)
        return refs


_ring: _Ring | None = None
_ring_lock = threading.Lock()


def pack(batch: dict[str, Any], slots: int, min_bytes: int) -> dict[str, Any]:
    """Worker side: the batch with its arrays of ``min_bytes`` or more moved into this
    process's ring (made at the first call, ``slots`` slots sized for this batch)."""
    global _ring
    if not isinstance(batch, dict):  # ppsn's batches are dicts; anything else goes Grain's way
        return batch
    large = {k: v for k, v in batch.items() if _large(v, min_bytes)}
    if not large:
        return batch
    need = sum(_aligned(v.nbytes) for v in large.values())
    with _ring_lock:
        if _ring is None:
            _ring = _Ring(slots, need)
    slot = _ring.take() if need <= _ring.slot_bytes else None  # else larger than the first
    if slot is None:  # Grain's own way
        return dict(batch, **{MARKER: None})
    out = {k: v for k, v in batch.items() if k not in large}
    out[MARKER] = (_ring.shm.name, slot, _ring.put(slot, large))
    return out


class _Lease:
    """A received batch's hold on its slot: the slot is freed when the lease goes, i.e. when
    the last array of the batch (or a view of it, or a JAX array aliasing it) is gone."""

    __slots__ = ("__weakref__",)


class _SlotArray:
    """What numpy wraps for one array of a slot (``np.asarray`` keeps it as the array's base).
    Attributes are released in this order: the lease (which may free the slot), the slot's
    bytes (kept mapped while held), then the segment (closed, if released, once unused)."""

    def __init__(self, lease, memory, segment, address: int, shape, typestr: str):
        self.lease, self.memory, self.segment = lease, memory, segment
        self.__array_interface__ = {"version": 3, "shape": tuple(shape), "typestr": typestr,
                                    "data": (address, False)}


def _free(flag: memoryview) -> None:
    flag[0] = _FREE
    flag.release()


class Receiver:
    """Main side: opens each worker's segment once and hands out its slots' arrays in place
    (no copy); a slot is freed when nothing refers to its batch any more."""

    def __init__(self):
        self._segments: dict[str, tuple[shared_memory.SharedMemory, int]] = {}
        self.received = self.unslotted = 0

    def _segment(self, name: str) -> tuple[shared_memory.SharedMemory, int]:
        if name not in self._segments:
            shm = shared_memory.SharedMemory(name)
            probe = ctypes.c_char.from_buffer(shm.buf)
            self._segments[name] = shm, ctypes.addressof(probe)
            del probe
        return self._segments[name]

    def unpack(self, batch: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(batch, dict) or MARKER not in batch:
            return batch
        self.received += 1
        packed = batch.pop(MARKER)
        if packed is None:  # no free slot in its worker's ring: it came Grain's way
            self.unslotted += 1
            return batch
        name, slot, refs = packed
        shm, address = self._segment(name)
        lease = _Lease()
        for key, offset, shape, dtype in refs:
            end = offset + math.prod(shape) * np.dtype(dtype).itemsize
            batch[key] = np.asarray(_SlotArray(lease, shm.buf[offset:end], shm,
                                               address + offset, shape, dtype))
        weakref.finalize(lease, _free, shm.buf[slot * ALIGN:slot * ALIGN + 1]).atexit = False
        return batch

    def release_all(self) -> None:
        """Unlink every segment seen (the workers have stopped) and unmap those no batch still
        uses (the others are unmapped when their last array goes)."""
        if self.unslotted:
            log.warning("%d of %d batches came Grain's way (no free slot in their worker's "
                        "ring: the consumer held many batches at once, and each keeps its slot "
                        "until its arrays are gone)", self.unslotted, self.received)
        self.received = self.unslotted = 0
        for shm, _ in self._segments.values():
            try:
                shm.unlink()
            except FileNotFoundError:
                pass
            try:
                shm.close()
            except BufferError:
                pass
        self._segments = {}
