"""Scoring a dataset: one pass over a list's padded eval batches into a :class:`Ledger` of
per-video results, each video exactly once, whatever the device and process counts.

Validation (CenterCrop loss / Top-1 / Top-5), the TenCrop test and ``python -m ppsn.benchmark
eval`` differ in their clips, in the jitted function that scores a batch and in their reports,
not in how they go through a list: :func:`score_dataset` feeds each batch
(:func:`ppsn.data.datasets.eval_dataset`: padded with ``mask`` False rows so that every process
runs the same steps) to ``score(variables, batch)``, fetches its results one batch late (the
device is already busy with the next one) and files each row under its list index. ``score``
returns per-row outputs replicated on every process (every process sees every row) and the
batch's :data:`ROW_KEYS` (:func:`with_rows`). Reducers over a ledger are in
:mod:`ppsn.evaluation.metrics`.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from ppsn import parallel

ROW_KEYS = ("index", "label", "mask", "failed")  # per-video fields the results come back with


def with_rows(score):
    """``score(variables, batch)`` that also returns the batch's :data:`ROW_KEYS` present (to be
    jitted with replicated outputs, so that every process learns every row's index and label)."""

    def scored(variables, batch):
        return {**score(variables, batch), **{k: batch[k] for k in ROW_KEYS if k in batch}}

    return scored


@dataclasses.dataclass
class Ledger:
    """Per-video results of one pass over a list of ``n`` videos (row ``i``: the list's entry
    ``i``). ``values`` holds ``score``'s per-row outputs, NaN (0 for other than floats) where a
    video was not scored (it failed to decode, or was never seen)."""

    label: np.ndarray  # int64 [n]; -1 for a video never seen
    scored: np.ndarray  # bool [n]: decoded and scored (the batch's mask)
    failed: np.ndarray  # bool [n]: could not be decoded
    seen: np.ndarray  # int32 [n]: how many times the video came back (1 after a whole pass)
    values: dict = dataclasses.field(default_factory=dict)
    video_ids: list | None = None  # with ``keep_ids``: every video's id, on every process

    @classmethod
    def empty(cls, n: int) -> "Ledger":
        return cls(label=np.full(n, -1, np.int64), scored=np.zeros(n, bool),
                   failed=np.zeros(n, bool), seen=np.zeros(n, np.int32))

    def __len__(self) -> int:
        return len(self.label)

    def record(self, out: dict) -> None:
        """Files a batch's results (host arrays) under their rows' indices; padding is dropped."""
        rows = np.nonzero(out["index"] >= 0)[0]
        for key, value in out.items():
            if key not in ROW_KEYS and key not in self.values:
                floating = jnp.issubdtype(value.dtype, jnp.floating)  # bfloat16 kept as float32
                dtype = np.result_type(value.dtype, np.float32) if floating else value.dtype
                self.values[key] = np.full((len(self),) + value.shape[1:],
                                           np.nan if floating else 0, dtype)
        for row in rows:
            i = int(out["index"][row])
            self.seen[i] += 1
            self.label[i] = out["label"][row]
            if out["mask"][row]:
                self.scored[i] = True
                for key, value in self.values.items():
                    value[i] = out[key][row]
            if "failed" in out:
                self.failed[i] |= bool(out["failed"][row])

    def check_exactly_once(self) -> None:
        """The exactly-once invariant (never expected to fail): every video came back once."""
        if not (self.seen == 1).all():
            raise RuntimeError(f"videos scored {sorted(set(self.seen.tolist()))} times, "
                               "expected once each")


def score_dataset(score, variables, batches: Iterable[dict], num_videos: int, mesh, *,
                  inputs=("frames", "hw"), keep_ids: bool = False, lag: int = 1) -> Ledger:
    """The :class:`Ledger` of ``score(variables, batch)`` over ``batches`` (this process's
    batches of a list of ``num_videos``: :func:`ppsn.data.datasets.eval_dataset`'s, through a
    loader). ``inputs``: the batch fields fed besides :data:`ROW_KEYS`. ``lag``: batches in
    flight before their results are fetched (1: the next batch is dispatched first; 0: each
    batch is waited for, as a benchmark timing host and device apart needs). ``keep_ids``
    gathers every video's id (one gather across processes, at the end). The exactly-once
    invariant is checked before returning."""
    ledger = Ledger.empty(num_videos)
    ids: dict[int, str] = {}  # this process's rows
    pending = []
    for batch in batches:
        feed = {k: batch[k] for k in (*inputs, *ROW_KEYS) if k in batch}
        pending.append(score(variables, parallel.to_global(feed, mesh)))  # dispatched
        if keep_ids:
            ids.update((int(i), str(v)) for i, v in zip(batch["index"], batch["video_id"])
                       if i >= 0)
        while len(pending) > lag:
            ledger.record(parallel.to_host(pending.pop(0)))
    for out in pending:
        ledger.record(parallel.to_host(out))
    ledger.check_exactly_once()
    if keep_ids:
        ledger.video_ids = all_video_ids(ids, num_videos)
    return ledger


def all_video_ids(local: dict[int, str], n: int) -> list[str]:
    """Every video's id from each process's rows (one gather, at the end, across processes)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        encoded = {i: v.encode() for i, v in local.items()}
        width = int(np.max(multihost_utils.process_allgather(
            np.int32(max(map(len, encoded.values()), default=1)))))
        codes = np.zeros((n, width + 1), np.uint8)  # the last column: 1 where this process knows
        for i, v in encoded.items():
            codes[i, :len(v)] = np.frombuffer(v, np.uint8)
            codes[i, -1] = 1
        gathered = np.asarray(multihost_utils.process_allgather(codes))  # [processes, n, width]
        owner = gathered[:, :, -1].argmax(0)
        rows = gathered[owner, np.arange(n), :-1]
        local = {i: bytes(r).rstrip(b"\0").decode() for i, r in enumerate(rows)}
    return [local[i] for i in range(n)]
