"""Device prefetch: batches on the devices ahead of use, resumable at the consumed position."""

import time

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ppsn import parallel
from ppsn.train.prefetch import DevicePrefetcher


def _iterator():
    ds = grain.MapDataset.range(40).shuffle(seed=1).map(
        lambda i: {"x": np.full((2, 3), i, np.float32)}).batch(4)
    return iter(ds.to_iter_dataset())


def _to_device(mesh):
    return lambda batch: parallel.to_global(batch, mesh)


def test_reads_ahead_and_gives_device_arrays_in_order():
    mesh = parallel.make_mesh()
    expected = [b["x"] for b in _iterator()]
    reads = []
    source = _iterator()

    class Counting:
        def __next__(self):
            reads.append(1)
            return next(source)

        def get_state(self):
            return source.get_state()

    with DevicePrefetcher(Counting(), _to_device(mesh), size=2) as feed:
        first = next(feed)
        deadline = time.monotonic() + 30
        while len(reads) < 4 and time.monotonic() < deadline:  # 1 consumed + 2 queued + 1 in hand
            time.sleep(0.01)
        assert len(reads) >= 3, reads  # at least 2 global batches ahead of the consumer
        assert isinstance(first["x"], jax.Array)
        got = [first["x"]] + [next(feed)["x"] for _ in range(len(expected) - 1)]
        with pytest.raises(StopIteration):
            next(feed)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_a_checkpoint_of_the_position_resumes_after_the_consumed_batch(tmp_path):
    mesh = parallel.make_mesh()
    expected = [b["x"] for b in _iterator()]
    handler = grain.checkpoint.CheckpointHandler()
    with DevicePrefetcher(_iterator(), _to_device(mesh), size=3) as feed:
        for _ in range(3):
            next(feed)
        time.sleep(0.2)  # let the thread read further ahead
        with ocp.Checkpointer(handler) as ckptr:  # the real Grain checkpoint handler
            ckptr.save(tmp_path / "data", args=grain.checkpoint.CheckpointSave(feed.position()))
    resumed = _iterator()
    with ocp.Checkpointer(handler) as ckptr:
        ckptr.restore(tmp_path / "data", args=grain.checkpoint.CheckpointRestore(resumed))
    np.testing.assert_array_equal(next(resumed)["x"], expected[3])


def test_an_error_in_the_reader_reaches_the_consumer():
    def broken():
        yield {"x": np.zeros(2, np.float32)}
        raise RuntimeError("20 consecutive bad samples")

    class Iterator:
        def __init__(self):
            self._it = broken()

        def __next__(self):
            return next(self._it)

        def get_state(self):
            return {}

    with DevicePrefetcher(Iterator(), lambda b: b, size=2) as feed:
        next(feed)
        with pytest.raises(RuntimeError, match="consecutive bad samples"):
            next(feed)
