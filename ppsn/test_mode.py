"""The test mode: TenCrop Top-1 / Top-5 over a whole list, each video scored exactly once.

    python -m ppsn.main --config=configs/pptsn_k400_frames.py --mode=test --weights=DIR

``DIR`` is a ppsn variables checkpoint (``python -m ppsn.convert.paddle`` output, or a run's
``best/``) or a training workdir (its ``best/`` if present, else its latest checkpoint). The
model averages the features of all ``test_num_seg x 10`` views of a video, as PaddleVideo does.

Batches are padded with a mask so that every process runs the same number of steps and no video
is dropped or counted twice, whatever the device and process counts. Outputs, beside each other
in the output directory:

* ``ledger.csv``: ``video_id, label, prediction, score`` for every entry of the list (a video
  that cannot be decoded gets prediction -1 and counts as wrong);
* ``summary.json``: Top-1, Top-5, counts, the list's fingerprint, the checkpoint and the config;
* ``per_class.csv``: per-class accuracy (class names from ``data.label_list`` when given);
* ``confusion_matrix.png``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os

import jax
import numpy as np
from tqdm import tqdm

from ppsn import checkpoint, parallel, preflight
from ppsn.data import pipeline
from ppsn.data.transforms import normalize, ten_crop_on_device
from ppsn.models import chunked_logits
from ppsn.train import initialize, losses

log = logging.getLogger(__name__)


def score_fn(model, mesh, spec, views_per_chunk: int = 0):
    """jitted ``scores(variables, batch)``: softmax over classes for a (global) batch; with
    ``spec.device_crops`` the TenCrop views are cut here from ``batch['frames']`` and
    ``batch['hw']``. ``views_per_chunk > 0`` runs the views in chunks
    (:func:`ppsn.models.chunked_logits`). Scores come back replicated: every process sees
    every row."""
    rep, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)

    def score(variables, batch):
        frames = batch["frames"]
        if spec.device_crops:
            frames = ten_crop_on_device(frames, batch["hw"], spec.target_size)
        if views_per_chunk:
            logits = chunked_logits(model, variables, normalize(frames), views_per_chunk)
        else:
            logits = model.apply(variables, normalize(frames), train=False)
        return jax.nn.softmax(logits, axis=-1)

    return jax.jit(score, in_shardings=(rep, data), out_shardings=rep)


def run_test(config, weights: str, output_dir: str, force: bool = False) -> dict:
    """Score the config's test list with ``weights``; writes the reports to ``output_dir``.

    Everything the run needs (the list, the label list, the weights' depth and classes against
    the config, the batch size against the devices, the output directory) is checked before
    the first video (:func:`ppsn.preflight.check`). ``output_dir`` must be new, or with
    ``force`` an earlier test report (it holds ``summary.json``); the reports are written
    beside it and renamed into place at the end, so a failed run leaves the old ones intact."""
    parallel.initialize_distributed()
    mesh = parallel.make_mesh()
    num_classes = config.model.num_classes
    inputs = preflight.check(config, "test", mesh.devices.size, weights=weights,
                             output=output_dir, force=force)
    source = inputs.test
    skipped = getattr(source, "skipped", [])
    names = inputs.label_names or [str(i) for i in range(num_classes)]
    spec = pipeline.clip_spec(config.data, "test")
    local = parallel.check_batch_size(config.test_batch_size, mesh)
    variables, meta = inputs.weights
    what = meta["path"]
    model = initialize.build_model(config)
    variables = jax.device_put(variables, parallel.replicated(mesh))
    score = score_fn(model, mesh, spec, config.data.test_views_per_chunk)

    show = jax.process_index() == 0
    staging = checkpoint.replacement_path(output_dir)  # the reports' home until the end
    if show:
        checkpoint.prepare_replacement(output_dir)
    checkpoint.sync("ppsn:test:output")
    ds = pipeline.eval_dataset(source, spec, local,
                               skip_log=os.path.join(staging, "bad_samples.jsonl"))
    n = len(source)
    scores = np.full((n, num_classes), np.nan, np.float32)
    failed = np.zeros(n, bool)
    seen = np.zeros(n, np.int32)
    for batch in tqdm(pipeline.to_iterator(ds, config.data.num_workers), total=len(ds),
                      desc="test", unit="batch", disable=not show):
        inputs = {k: batch[k] for k in ("frames", "hw") if k in batch}
        out = parallel.to_host(score(variables, parallel.to_global(inputs, mesh)))
        meta = parallel.to_host(_gather(
            {k: batch[k] for k in ("index", "mask", "failed")}, mesh))
        for row in np.nonzero(meta["index"] >= 0)[0]:
            i = int(meta["index"][row])
            seen[i] += 1
            if meta["mask"][row]:
                scores[i] = out[row]
            failed[i] |= bool(meta["failed"][row])
    if not (seen == 1).all():  # the exactly-once invariant: never expected to fire
        raise RuntimeError(f"videos scored {sorted(set(seen.tolist()))} times, expected once each")

    labels = np.array([source[i]["label"] for i in range(n)])
    video_ids = [source[i]["video_id"] for i in range(n)]
    pred = np.where(failed, -1, np.nan_to_num(scores, nan=-1).argmax(-1))
    correct1 = losses.topk_correct_numpy(np.nan_to_num(scores, nan=-1), labels, 1) & ~failed
    correct5 = losses.topk_correct_numpy(np.nan_to_num(scores, nan=-1), labels, 5) & ~failed
    summary = {
        "top1": float(correct1.mean()), "top5": float(correct5.mean()), "count": n,
        "failed": int(failed.sum()), "checkpoint": what,
        # Lines of the list that could not be parsed: not scored, not in count or Top-1.
        "skipped_lines": len(skipped), "listed": n + len(skipped),
        "skipped": [dataclasses.asdict(line) for line in skipped],
        "list": getattr(source, "list_file", repr(source)),
        "list_sha256": source.fingerprint() if hasattr(source, "fingerprint") else None,
        "num_seg": spec.num_seg, "views": spec.views,
        "devices": mesh.devices.size, "processes": jax.process_count(),
        "config": json.loads(config.to_json_best_effort()),
    }
    if show:
        _write_reports(staging, video_ids, labels, pred, scores, failed, names, summary)
        checkpoint.swap_in(output_dir)
    lines = f", {len(skipped)} list lines skipped (not scored)" if skipped else ""
    print(f"Top-1: {summary['top1']:.4f}  Top-5: {summary['top5']:.4f}  ({n} videos, "
          f"{summary['failed']} failed to decode{lines}; reports in {output_dir})")
    return summary


def _gather(local, mesh):
    """Process-local rows -> replicated global arrays (so process 0 sees every row)."""
    global_arrays = parallel.to_global(local, mesh)
    return jax.jit(lambda x: x, out_shardings=parallel.replicated(mesh))(global_arrays)


def _write_reports(output_dir, video_ids, labels, pred, scores, failed, names, summary):
    with open(os.path.join(output_dir, "ledger.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video_id", "label", "prediction", "score"])
        for i, vid in enumerate(video_ids):
            s = "" if failed[i] else f"{scores[i, pred[i]]:.6f}"
            writer.writerow([vid, int(labels[i]), int(pred[i]), s])
    with open(os.path.join(output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    k = len(names)
    confusion = np.zeros((k, k), np.int64)
    for y, p in zip(labels, pred):
        if p >= 0:
            confusion[y, p] += 1
    with open(os.path.join(output_dir, "per_class.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class_id", "name", "count", "correct", "accuracy"])
        for c in range(k):
            count = int((labels == c).sum())
            correct = int(confusion[c, c])
            writer.writerow([c, names[c], count, correct,
                             f"{correct / count:.4f}" if count else ""])
    _plot_confusion(confusion, names, os.path.join(output_dir, "confusion_matrix.png"))


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
    fig.savefig(path, dpi=80)
    plt.close(fig)
