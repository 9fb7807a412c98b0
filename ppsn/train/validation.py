"""Validation during training (CenterCrop loss / Top-1 / Top-5 over the whole list, each video
exactly once) and keeping the best model in ``WORKDIR/best``."""

from __future__ import annotations

import json
import logging
import os

import jax

from ppsn import checkpoint, parallel, paths
from ppsn.data import datasets, loading
from ppsn.evaluation import metrics

log = logging.getLogger(__name__)


def validate(eval_fn, state, source, spec, global_batch, mesh, loader=None,
             log_every: int = 0) -> dict:
    """Loss / Top-1 / Top-5 / mean class Top-1 over the whole source, each video counted
    exactly once; ``log_every > 0`` logs progress (videos done / total) every that many batches."""
    local = parallel.check_batch_size(global_batch, mesh)
    ds = datasets.eval_dataset(source, spec, local)
    totals = None
    for i, batch in enumerate(loading.to_iterator(ds, loader), start=1):
        sums = eval_fn(state, parallel.to_global(
            {k: batch[k] for k in ("frames", "label", "mask")}, mesh))
        totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
        if log_every and i % log_every == 0 and i < len(ds):
            log.info("validation: %d/%d videos", min(i * global_batch, len(source)), len(source))
    totals = parallel.to_host(totals)
    count = max(float(totals["count"]), 1.0)
    return {"loss": float(totals["loss"]) / count, "top1": float(totals["top1"]) / count,
            "top5": float(totals["top5"]) / count,
            "mean_class_top1": metrics.mean_class_from_sums(totals["class_top1"],
                                                            totals["class_count"]),
            "count": int(totals["count"])}


def best_top1(workdir: str) -> float:
    """The Top-1 of the model in ``WORKDIR/best`` (-1 when there is none yet)."""
    meta = paths.path(paths.join(os.fspath(workdir), checkpoint.BEST_DIR, checkpoint.META_FILE))
    if meta.exists():
        return float(json.loads(meta.read_text()).get("top1", -1.0))
    return -1.0


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
