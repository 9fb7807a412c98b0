"""Worker -> main hand-over through a shared-memory ring per worker: the same batches as made
in process, handed over in place, one segment per worker reused for every batch, nothing left
in /dev/shm; a slot is reused only once nothing refers to its batch (views and JAX arrays
included), and a worker that finds no free slot hands its batch Grain's way instead of
waiting."""

import os

import numpy as np
import pytest

from ppsn.data import datasets, handoff, loading
from ppsn.data.clips import ClipSpec
from ppsn.data.lists import ListFileSource


def _segments():
    """ppsn's shared-memory segments in /dev/shm now (other tests' runs included: the tests
    check only the segments their own iterator used)."""
    return {n for n in os.listdir("/dev/shm") if n.startswith("ppsn_")} if os.path.isdir(
        "/dev/shm") else set()


class _Names:
    """Receiver that remembers which segments it opened."""

    def __init__(self, receiver):
        self.receiver, self.names = receiver, set()

    def unpack(self, batch):
        if batch.get(handoff.MARKER) is not None:  # None: it came Grain's way
            self.names.add(batch[handoff.MARKER][0])
        return self.receiver.unpack(batch)

    def release_all(self):
        self.receiver.release_all()


def _toy_dataset(toy_dir, mode):
    source = ListFileSource(str(toy_dir / f"{'train' if mode == 'train' else 'val'}_frames.list"),
                            "frames", str(toy_dir), 10)
    spec = ClipSpec(mode, 3, 64, 48)
    if mode == "train":
        return datasets.train_dataset(source, spec, 2, seed=0, num_epochs=3, process_index=0,
                                      process_count=1)
    return datasets.eval_dataset(source, spec, 2, process_index=0, process_count=1)


@pytest.fixture
def small_arrays_in_the_ring(monkeypatch):
    monkeypatch.setattr(loading, "MIN_SHM_BYTES", 1024)  # the toy's small frames too


def _assert_batch(batch, expected):
    assert set(batch) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(batch[key], expected[key], err_msg=key)


@pytest.mark.parametrize("mode,prefetch", [("train", 0), ("valid", 1)])
def test_ring_batches_equal_in_process_batches_and_segments_are_reused(
        toy_dir, mode, prefetch, small_arrays_in_the_ring):
    ds = _toy_dataset(toy_dir, mode)
    it = loading.to_iterator(ds, loading.Loader(num_workers=2, prefetch_batches=prefetch,
                                                  handoff="ring"))
    it._receiver = names = _Names(it._receiver)
    received = 0
    for i, batch in enumerate(it):  # each batch dropped before the next: its slot is free again
        _assert_batch(batch, ds[i])
        assert isinstance(batch["frames"].base, handoff._SlotArray)  # in place, not a copy
        received += 1
    assert received == len(ds) > 4
    assert names.receiver.unslotted == 0  # every batch came through a slot
    assert len(names.names) == 2  # one segment per worker, for every batch
    assert not names.names & _segments()  # unlinked when the iterator ended


def test_batches_held_are_never_overwritten_and_the_excess_comes_grains_way(
        toy_dir, small_arrays_in_the_ring, caplog):
    ds = _toy_dataset(toy_dir, "train")
    it = loading.to_iterator(ds, loading.Loader(num_workers=1, prefetch_batches=0,
                                                  handoff="ring"))
    it._receiver = names = _Names(it._receiver)
    slots = loading._ring_slots(it._loader)
    assert len(ds) > slots + 2
    with caplog.at_level("WARNING", logger="ppsn.data.handoff"):
        got = list(it)  # every batch held: its slot stays taken
    for i, batch in enumerate(got):
        _assert_batch(batch, ds[i])  # none overwritten by a later batch
    in_slots = sum(isinstance(b["frames"].base, handoff._SlotArray) for b in got)
    assert in_slots == slots  # the ring full, then Grain's way; nothing waited or blocked
    assert f"{len(ds) - slots} of {len(ds)} batches came Grain's way" in caplog.text
    assert len(names.names) == 1  # the worker's one segment...
    assert not names.names & _segments()  # ...unlinked at the end, its arrays still held
    assert got[0]["frames"].sum() == ds[0]["frames"].sum()  # and still readable


def test_a_slot_is_freed_only_when_nothing_refers_to_its_batch(monkeypatch):
    import jax

    monkeypatch.setattr(handoff, "_ring", None)
    batch = {"frames": np.arange(4096, dtype=np.uint8).reshape(4, 1024),
             "label": np.arange(4, dtype=np.int32)}
    receiver = handoff.Receiver()
    try:
        first = handoff.pack(dict(batch), slots=2, min_bytes=1024)
        second = handoff.pack(dict(batch), slots=2, min_bytes=1024)
        assert "frames" not in first and first[handoff.MARKER][1] != second[handoff.MARKER][1]
        third = handoff.pack(dict(batch), slots=2, min_bytes=1024)  # both slots taken
        assert third[handoff.MARKER] is None and third["frames"] is batch["frames"]
        assert receiver.unpack(third)["frames"] is batch["frames"]  # Grain's way, counted
        assert (receiver.received, receiver.unslotted) == (1, 1)

        first_slot = first[handoff.MARKER][1]
        out = receiver.unpack(first)  # the same dict, its arrays now in place
        del first
        _assert_batch(out, batch)
        view = out["frames"][1:3, ::2]  # a view of the batch holds the slot
        on_device = jax.device_put(out["frames"])  # and so does a JAX array aliasing it
        del out
        assert handoff.pack(dict(batch), slots=2, min_bytes=1024)[handoff.MARKER] is None
        del view
        assert handoff.pack(dict(batch), slots=2, min_bytes=1024)[handoff.MARKER] is None
        np.testing.assert_array_equal(np.asarray(on_device), batch["frames"])
        del on_device
        jax.numpy.zeros(1).block_until_ready()  # JAX lets go of host arrays at its next operation
        fourth = handoff.pack({"frames": batch["frames"] + 1, "label": batch["label"]},
                              slots=2, min_bytes=1024)
        assert fourth[handoff.MARKER][1] == first_slot  # freed once nothing referred to it
        np.testing.assert_array_equal(receiver.unpack(fourth)["frames"], batch["frames"] + 1)
        _assert_batch(receiver.unpack(second), batch)
    finally:
        receiver.release_all()
        ring = handoff._ring
        if ring is not None:
            ring.shm.close()  # the receiver unlinked it
