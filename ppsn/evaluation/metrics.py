"""Small pure reducers from per-video results to metrics, numpy only.

The same functions score test mode's ledger, validation's per-class sums and fused runs:

* :func:`topk_correct`: per video, whether its label is among the ``k`` best scores (ties count
  against it, a failed video is wrong: the rule of :func:`ppsn.train.losses.topk_correct`);
* :func:`mean_class_top1`: the mean over the classes present in the list of each class's Top-1
  (mmaction2's ``mean_class_accuracy``), from per-video results or from per-class sums;
* :func:`summarize`: Top-1, Top-5 and mean class Top-1 of a score matrix.
"""

from __future__ import annotations

import numpy as np


def topk_correct(scores, labels, k: int, failed=None) -> np.ndarray:
    """Bool per video: fewer than ``k`` other classes score >= the label's score (a NaN score
    counts against the label); ``failed`` videos are never correct."""
    scores = np.nan_to_num(np.asarray(scores), nan=-np.inf)
    labels = np.asarray(labels)
    label_score = np.take_along_axis(scores, labels[:, None], axis=-1)
    correct = np.sum(~(scores < label_score), axis=-1) - 1 < k
    if failed is not None:
        correct &= ~np.asarray(failed, bool)
    return correct


def class_sums(correct, labels, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(correct per class, videos per class)`` as float arrays ``[num_classes]``."""
    labels = np.asarray(labels)
    count = np.bincount(labels, minlength=num_classes).astype(np.float64)
    hits = np.bincount(labels, weights=np.asarray(correct, np.float64), minlength=num_classes)
    return hits, count


def mean_class_from_sums(hits, count) -> float:
    """Mean over the classes with at least one video of ``hits / count``."""
    hits, count = np.asarray(hits, np.float64), np.asarray(count, np.float64)
    present = count > 0
    if not present.any():
        return 0.0
    return float(np.mean(hits[present] / count[present]))


def mean_class_top1(correct, labels, num_classes: int | None = None) -> float:
    """Mean of per-class Top-1 over the classes present in ``labels``."""
    labels = np.asarray(labels)
    num_classes = num_classes or (int(labels.max()) + 1 if labels.size else 0)
    return mean_class_from_sums(*class_sums(correct, labels, num_classes))


def summarize(scores, labels, failed=None) -> dict:
    """``top1``, ``top5`` and ``mean_class_top1`` of ``scores`` [N, classes] against ``labels``."""
    scores = np.asarray(scores)
    if not len(scores):
        return {"top1": 0.0, "top5": 0.0, "mean_class_top1": 0.0}
    correct1 = topk_correct(scores, labels, 1, failed)
    correct5 = topk_correct(scores, labels, min(5, scores.shape[-1]), failed)
    return {"top1": float(correct1.mean()), "top5": float(correct5.mean()),
            "mean_class_top1": mean_class_top1(correct1, labels, scores.shape[-1])}


def fuse(scores: list, weights=None) -> np.ndarray:
    """The weighted mean of several runs' ``[N, classes]`` scores (equal weights by default),
    float32; fusing a run with itself gives its scores back exactly."""
    weights = np.ones(len(scores)) if weights is None else np.asarray(weights, np.float64)
    total = sum(w * np.asarray(s, np.float64) for w, s in zip(weights, scores))
    return (total / weights.sum()).astype(np.float32)
