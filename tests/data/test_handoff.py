"""Worker -> main hand-over through a shared-memory ring per worker: the same batches as made
in process, one segment per worker reused for every batch, nothing left in /dev/shm, and a
worker that cannot get a slot falls back to Grain's own way instead of blocking."""

import os

import numpy as np
import pytest

from ppsn.data import handoff, pipeline
from ppsn.data.clips import ClipSpec
from ppsn.data.lists import ListFileSource


def _segments():
    return {n for n in os.listdir("/dev/shm") if n.startswith("ppsn_")} if os.path.isdir(
        "/dev/shm") else set()


class _Names:
    """Receiver that remembers which segments it opened."""

    def __init__(self, receiver):
        self.receiver, self.names = receiver, set()

    def unpack(self, batch):
        if handoff.MARKER in batch:
            self.names.add(batch[handoff.MARKER][0])
        return self.receiver.unpack(batch)

    def release_all(self):
        self.receiver.release_all()


@pytest.mark.parametrize("mode,prefetch", [("train", 0), ("valid", 1)])
def test_ring_batches_equal_in_process_batches_and_segments_are_reused(toy_dir, mode, prefetch):
    source = ListFileSource(str(toy_dir / f"{'train' if mode == 'train' else 'val'}_frames.list"),
                            "frames", str(toy_dir), 10)
    spec = ClipSpec(mode, 3, 64, 48)
    if mode == "train":
        ds = pipeline.train_dataset(source, spec, 2, seed=0, num_epochs=3, process_index=0,
                                    process_count=1)
    else:
        ds = pipeline.eval_dataset(source, spec, 2, process_index=0, process_count=1)
    before = _segments()
    it = pipeline.to_iterator(ds, pipeline.Loader(num_workers=2, prefetch_batches=prefetch,
                                                  handoff="ring"))
    it._receiver = names = _Names(it._receiver)
    pipeline.MIN_SHM_BYTES, saved = 1024, pipeline.MIN_SHM_BYTES  # the toy's small frames too
    try:
        got = list(it)
    finally:
        pipeline.MIN_SHM_BYTES = saved
    assert len(got) == len(ds) > 4
    for i, batch in enumerate(got):
        expected = ds[i]
        assert set(batch) == set(expected)
        for key in expected:
            np.testing.assert_array_equal(batch[key], expected[key], err_msg=key)
        assert type(batch["frames"]) is np.ndarray  # the main process's own copy
    assert len(names.names) == 2  # one segment per worker, for every batch
    assert _segments() == before  # unlinked when the iterator ended


def test_a_worker_without_a_free_slot_falls_back_instead_of_blocking(monkeypatch):
    monkeypatch.setattr(handoff, "WAIT_S", 0.05)
    monkeypatch.setattr(handoff, "_ring", None)
    batch = {"frames": np.arange(4096, dtype=np.uint8).reshape(4, 1024),
             "label": np.arange(4, dtype=np.int32)}
    receiver = handoff.Receiver()
    try:
        first = handoff.pack(dict(batch), slots=2, min_bytes=1024)
        second = handoff.pack(dict(batch), slots=2, min_bytes=1024)
        assert handoff.MARKER in first and handoff.MARKER in second and "frames" not in first
        third = handoff.pack(dict(batch), slots=2, min_bytes=1024)  # both slots still taken
        assert handoff.MARKER not in third and third["frames"] is batch["frames"]
        first_slot = first[handoff.MARKER][1]
        out = receiver.unpack(first)  # frees its slot
        np.testing.assert_array_equal(out["frames"], batch["frames"])
        np.testing.assert_array_equal(out["label"], batch["label"])
        fourth = handoff.pack({"frames": batch["frames"] + 1, "label": batch["label"]},
                              slots=2, min_bytes=1024)
        assert fourth[handoff.MARKER][1] == first_slot  # the freed slot, reused
        np.testing.assert_array_equal(receiver.unpack(fourth)["frames"], batch["frames"] + 1)
        np.testing.assert_array_equal(receiver.unpack(second)["frames"], batch["frames"])
    finally:
        receiver.release_all()
        ring = handoff._ring
        if ring is not None:
            ring.shm.close()
