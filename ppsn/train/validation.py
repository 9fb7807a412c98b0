"""Validation during training (CenterCrop loss / Top-1 / Top-5 over the whole list, each video
exactly once) and keeping the best model in ``WORKDIR/best``."""

from __future__ import annotations

import logging
import os

import numpy as np

from ppsn import checkpoint, parallel, paths
from ppsn.data import datasets, loading
from ppsn.evaluation import metrics, scoring

log = logging.getLogger(__name__)


def validate(eval_fn, state, source, spec, global_batch, mesh, loader=None,
             log_every: int = 0) -> dict:
    """Loss / Top-1 / Top-5 / mean class Top-1 over the whole source, each video counted
    exactly once (``eval_fn``: :func:`ppsn.train.steps.jit_eval`'s); ``log_every > 0`` logs
    progress (videos done / total) every that many batches."""
    local = parallel.check_batch_size(global_batch, mesh)
    ds = datasets.eval_dataset(source, spec, local)
    batches = _logged(loading.to_iterator(ds, loader), len(ds), log_every, global_batch,
                      len(source))
    return reduce(scoring.score_dataset(eval_fn, state, batches, len(source), mesh,
                                        inputs=("frames",)))


def reduce(ledger: scoring.Ledger) -> dict:
    """Validation's metrics from its ledger (``loss``, ``top1``, ``top5`` per video) over the
    videos scored (a video that failed to decode is left out, as is padding)."""
    scored = ledger.scored
    count = int(scored.sum())
    per_video = {k: ledger.values[k][scored] if k in ledger.values else np.zeros(0, np.float32)
                 for k in ("loss", "top1", "top5")}
    sums = {k: float(np.sum(v, dtype=np.float64)) for k, v in per_video.items()}
    return {**{k: v / max(count, 1) for k, v in sums.items()},
            "mean_class_top1": metrics.mean_class_top1(per_video["top1"], ledger.label[scored]),
            "count": count}


def _logged(batches, total: int, every: int, global_batch: int, num_videos: int):
    """``batches``, logging progress (videos done / total) every ``every`` batches."""
    for i, batch in enumerate(batches, start=1):
        yield batch
        if every and i % every == 0 and i < total:
            log.info("validation: %d/%d videos", min(i * global_batch, num_videos), num_videos)


def best_top1(workdir: str) -> float:
    """The Top-1 of the model in ``WORKDIR/best`` (-1 when there is none yet)."""
    meta = checkpoint.read_meta(paths.join(os.fspath(workdir), checkpoint.BEST_DIR)) or {}
    return float(meta.get("top1", -1.0))


def keep_best(workdir: str, task, state, metrics: dict, best: float, epoch: int, step: int
              ) -> float:
    """Saves the served model to ``WORKDIR/best`` when ``metrics['top1']`` beats ``best``
    (every process takes part); returns the new best Top-1."""
    if metrics["top1"] <= best:
        return best
    best = metrics["top1"]
    checkpoint.save_variables(  # replaces the old best atomically
        paths.join(os.fspath(workdir), checkpoint.BEST_DIR),
        parallel.to_host(task.serving_variables(state.params, state.batch_stats)),
        {**task.meta(), "top1": best, "epoch": epoch, "step": step, "layout": "ppsn"},
        force=True)
    log.info(f"Already save the best model (top1 acc){best:.4f}")
    return best
