"""The reports of a scored list, beside each other in an output directory (test mode's and
``python -m ppsn.fuse``'s): ``ledger.csv`` (``video_id, label, prediction, score`` per video),
``summary.json``, ``per_class.csv`` (per-class accuracy) and ``confusion_matrix.png``. Written
through :mod:`ppsn.paths` (local or ``gs://``)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np

from ppsn import paths


def write_reports(output_dir, video_ids, labels, pred, scores, failed, names, summary):
    """``ledger.csv``, ``summary.json``, ``per_class.csv`` and ``confusion_matrix.png`` in
    ``output_dir`` (a video with ``failed`` has no score; ``pred`` -1 counts as wrong)."""
    def write_csv(name, header, rows):
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(header)
        writer.writerows(rows)
        paths.path(paths.join(output_dir, name)).write_text(text.getvalue())

    write_csv("ledger.csv", ["video_id", "label", "prediction", "score"],
              ([vid, int(labels[i]), int(pred[i]), "" if failed[i] else f"{scores[i, pred[i]]:.6f}"]
               for i, vid in enumerate(video_ids)))
    paths.path(paths.join(output_dir, "summary.json")).write_text(json.dumps(summary, indent=2))
    k = len(names)
    confusion = np.zeros((k, k), np.int64)
    for y, p in zip(labels, pred):
        if p >= 0:
            confusion[y, p] += 1
    counts = [int((labels == c).sum()) for c in range(k)]
    write_csv("per_class.csv", ["class_id", "name", "count", "correct", "accuracy"],
              ([c, names[c], counts[c], int(confusion[c, c]),
                f"{confusion[c, c] / counts[c]:.4f}" if counts[c] else ""] for c in range(k)))
    with paths.path(paths.join(output_dir, "confusion_matrix.png")).open("wb") as f:
        _plot_confusion(confusion, names, f)


def _plot_confusion(confusion, names, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(names)
    size = min(4 + k * 0.35, 40)
    fig, ax = plt.subplots(figsize=(size, size))
    rows = confusion.sum(1, keepdims=True)
    ax.imshow(confusion / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1)
    if k <= 50:
        ax.set_xticks(range(k), names, rotation=90, fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (row-normalized)")
    fig.tight_layout()
    fig.savefig(path, dpi=80, format="png")
    plt.close(fig)
