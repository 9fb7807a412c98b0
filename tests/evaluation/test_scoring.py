"""score_dataset: each video of a list exactly once into a per-video ledger, in process, with a
tiny jitted scorer over real padded eval batches."""

import functools

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppsn import parallel
from ppsn.data import datasets
from ppsn.data.clips import ClipSpec
from ppsn.evaluation import scoring

NUM_CLASSES = 4


class _Source:
    """``n`` in-memory frame records; the videos in ``bad`` cannot be decoded (no frames)."""

    def __init__(self, n, bad=()):
        self.n, self.bad = n, set(bad)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        jpeg = cv2.imencode(".jpg", np.full((16, 20, 3), 10 * i, np.uint8))[1].tobytes()
        return {"index": i, "label": i % NUM_CLASSES, "video_id": f"v{i}",
                "jpegs": [] if i in self.bad else [jpeg] * 3}


@functools.lru_cache(maxsize=None)  # compiled once for the module
def _scorer(mesh):
    """Per row: ``scores`` [classes] from the mean pixel, and a per-row ``mean`` float32."""

    def score(variables, batch):
        mean = jnp.mean(batch["frames"].astype(jnp.float32), axis=(1, 2, 3, 4))
        return {"scores": jax.nn.one_hot(jnp.round(mean / 10).astype(jnp.int32) % NUM_CLASSES,
                                         NUM_CLASSES) * variables, "mean": mean}

    return jax.jit(scoring.with_rows(score), in_shardings=(parallel.replicated(mesh),
                                                           parallel.batch_sharded(mesh)),
                   out_shardings=parallel.replicated(mesh))


def _batches(source, batch_size):
    spec = ClipSpec("valid", 2, 16, 12)
    return datasets.eval_dataset(source, spec, batch_size, process_index=0, process_count=1)


@pytest.mark.parametrize("lag", [0, 1])
@pytest.mark.parametrize("n,batch", [(7, 3), (3, 4)])
def test_every_video_lands_once_in_its_row(n, batch, lag):
    mesh = parallel.make_mesh(jax.devices()[:1])
    source = _Source(n, bad={1})
    ds = _batches(source, batch)
    ledger = scoring.score_dataset(_scorer(mesh), jnp.float32(2.0), (ds[i] for i in range(len(ds))),
                                   n, mesh, inputs=("frames",), keep_ids=True, lag=lag)
    assert ledger.seen.tolist() == [1] * n
    assert ledger.label.tolist() == [i % NUM_CLASSES for i in range(n)]
    assert ledger.video_ids == [f"v{i}" for i in range(n)]
    assert ledger.failed.tolist() == [i == 1 for i in range(n)]
    assert ledger.scored.tolist() == [i != 1 for i in range(n)]
    # Each row holds its own video's result (the padding's never lands anywhere) ...
    for i in range(n):
        if i == 1:
            assert np.isnan(ledger.values["scores"][i]).all() and np.isnan(ledger.values["mean"][i])
        else:
            assert ledger.values["mean"][i] == pytest.approx(10 * i, abs=2)
            assert ledger.values["scores"][i].argmax() == i % NUM_CLASSES
            assert ledger.values["scores"][i].max() == 2.0
    assert ledger.values["scores"].dtype == np.float32


def test_bfloat16_results_are_kept_as_float32():
    ledger = scoring.Ledger.empty(2)
    ledger.record({"index": np.array([1, -1]), "label": np.array([3, -1]),
                   "mask": np.array([True, False]), "failed": np.array([False, False]),
                   "x": np.array([0.5, 9.0], jnp.bfloat16), "k": np.array([7, 9], np.int32)})
    assert ledger.values["x"].dtype == np.float32 and ledger.values["k"].dtype == np.int32
    assert np.isnan(ledger.values["x"][0]) and ledger.values["x"][1] == 0.5
    assert ledger.values["k"].tolist() == [0, 7] and ledger.label.tolist() == [-1, 3]


def test_a_video_seen_twice_or_never_is_an_error():
    mesh = parallel.make_mesh(jax.devices()[:1])
    ds = _batches(_Source(5), 2)
    twice = [ds[0], ds[0], ds[1], ds[2]]
    with pytest.raises(RuntimeError, match=r"scored \[1, 2\] times"):
        scoring.score_dataset(_scorer(mesh), jnp.float32(1.0), twice, 5, mesh, inputs=("frames",))
    with pytest.raises(RuntimeError, match=r"scored \[0, 1\] times"):
        scoring.score_dataset(_scorer(mesh), jnp.float32(1.0), [ds[0]], 5, mesh,
                              inputs=("frames",))


def test_validation_metrics_from_a_ledger():
    """Validation's reducer: means over the decoded videos; failed ones are left out."""
    from ppsn.train import validation

    ledger = scoring.Ledger.empty(4)
    ledger.record({"index": np.array([0, 1, 2, 3]), "label": np.array([0, 0, 1, 2]),
                   "mask": np.array([True, True, True, False]),
                   "failed": np.array([False, False, False, True]),
                   "loss": np.array([1.0, 2.0, 4.0, 100.0], np.float32),
                   "top1": np.array([1.0, 0.0, 1.0, 1.0], np.float32),
                   "top5": np.array([1.0, 1.0, 1.0, 1.0], np.float32)})
    got = validation.reduce(ledger)
    assert got == {"loss": pytest.approx(7 / 3), "top1": pytest.approx(2 / 3), "top5": 1.0,
                   "mean_class_top1": pytest.approx((0.5 + 1.0) / 2), "count": 3}
