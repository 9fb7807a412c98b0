"""The test mode: TenCrop Top-1 / Top-5 over a whole list, each video scored exactly once.

    python -m ppsn.main --config=configs/pptsn_k400_frames.py --mode=test --weights=DIR

``DIR`` is a ppsn variables checkpoint (``python -m ppsn.convert.paddle`` output, or a run's
``best/``) or a training workdir (its ``best/`` if present, else its latest checkpoint). The
model averages the features of all ``test_num_seg x 10`` views of a video, as PaddleVideo does.

``config.test_batch_per_device`` videos go to each device per step (the global batch follows
the device count; a list shorter than one global batch gets the fewest per device that hold
it, so 1 video on 8 devices is not scored beside 63 padding videos). Batches are padded with a mask so that every process runs the same number of
steps and no video is dropped or counted twice, whatever the device and process counts. One
jitted function scores a batch and returns its rows' index, label and flags with the scores, so
the run compiles the same programs for 30 videos or 30,000 (``summary.json`` records the count);
each batch's results are fetched while the device computes the next one. How many views go
through the model per call is :func:`ppsn.backend.views_per_call`'s (``data.test_views_per_chunk``).
Outputs, beside each other in the output directory:

* ``ledger.csv``: ``video_id, label, prediction, score`` for every entry of the list (a video
  that cannot be decoded gets prediction -1 and counts as wrong);
* ``summary.json``: Top-1, Top-5, counts, the list's fingerprint, the checkpoint and the config;
* ``per_class.csv``: per-class accuracy (class names from ``data.label_list`` when given);
* ``scores.npz``: every video's averaged class scores, for ``python -m ppsn.fuse``
  (:mod:`ppsn.evaluation.scores`);
* ``confusion_matrix.png``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging

import jax
import numpy as np
from tqdm import tqdm

from ppsn import backend, checkpoint, compilation, parallel, paths, preflight, workdir_lock
from ppsn.data import datasets, loading
from ppsn.data.transforms import normalize, ten_crop_on_device
from ppsn.evaluation import metrics
from ppsn.evaluation import scores as score_files
from ppsn.models import chunked_logits
from ppsn.train import initialize, losses

log = logging.getLogger(__name__)


ROW_KEYS = ("index", "label", "mask", "failed")  # per-video fields the scores come back with


def score_fn(model, mesh, spec, views_per_chunk: int = 0):
    """jitted ``score(variables, batch)``: ``{'scores': softmax over classes}`` for a (global)
    batch, plus the batch's ``ROW_KEYS`` present, all replicated: every process sees every
    row. With ``spec.device_crops`` the TenCrop views are cut here from ``batch['frames']``
    and ``batch['hw']``. ``views_per_chunk > 0`` runs the views of each video that many at a
    time (:func:`ppsn.models.chunked_logits`); 0 runs the whole batch in one call."""
    rep, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)

    def score(variables, batch):
        frames = batch["frames"]
        if spec.device_crops:
            frames = ten_crop_on_device(frames, batch["hw"], spec.target_size)
        if views_per_chunk:
            logits = chunked_logits(model, variables, normalize(frames), views_per_chunk)
        else:
            logits = model.apply(variables, normalize(frames), train=False)
        return {"scores": jax.nn.softmax(logits, axis=-1),
                **{k: batch[k] for k in ROW_KEYS if k in batch}}

    return jax.jit(score, in_shardings=(rep, data), out_shardings=rep)


def run_test(config, weights: str, output_dir: str, force: bool = False) -> dict:
    """Score the config's test list with ``weights``; writes the reports to ``output_dir``.

    Everything the run needs (the list, the label list, the weights' depth and classes against
    the config, the batch size against the devices, the output directory) is checked before
    the first video (:func:`ppsn.preflight.check`). ``output_dir`` must be new, or with
    ``force`` an earlier test report (it holds ``summary.json``); the reports are written
    beside it and renamed into place at the end, so a failed run leaves the old ones intact."""
    with compilation.CompileCounter() as compiles, contextlib.ExitStack() as held:
        summary = _run_test(config, weights, output_dir, force, compiles, held)
    return summary


def _run_test(config, weights, output_dir, force, compiles, held) -> dict:
    parallel.initialize_distributed()
    compilation.use_persistent_cache(
        config.compilation_cache_dir or compilation.user_cache_dir(), output_dir)
    mesh = parallel.make_mesh()
    num_classes = config.model.num_classes
    inputs = preflight.check(config, "test", mesh.devices.size, weights=weights,
                             output=output_dir, force=force)
    # One run writes an output at a time (process 0 holds OUTPUT.ppsn-lock until the end).
    held.enter_context(workdir_lock.job_lock(workdir_lock.output_lock_path(output_dir),
                                             f"the test output {output_dir}"))
    source = inputs.test
    skipped = getattr(source, "skipped", [])
    names = inputs.label_names or [str(i) for i in range(num_classes)]
    spec = datasets.clip_spec(config.data, "test")
    per_device = parallel.smallest_filling_batch(len(source), config.test_batch_per_device,
                                                 mesh.devices.size)
    local = parallel.check_batch_size(per_device * mesh.devices.size, mesh)
    views_per_call = backend.views_per_call(config.data.test_views_per_chunk)
    model = initialize.build_model(config)
    log.info("%s; compute dtype %s, convolutions %s; test batch %d per device (%d videos), "
             "%s per model call", parallel.describe(mesh), jax.numpy.dtype(model.dtype).name,
             model.conv_impl, per_device, per_device * mesh.devices.size,
             f"{views_per_call} views" if views_per_call else "all views of the batch")
    variables, meta = inputs.weights
    what = meta["path"]
    variables = jax.device_put(variables, parallel.replicated(mesh))
    score = score_fn(model, mesh, spec, views_per_call)

    show = jax.process_index() == 0
    staging = checkpoint.replacement_path(output_dir)  # the reports' home until the end
    if show:
        checkpoint.prepare_replacement(output_dir)
    checkpoint.sync("ppsn:test:output")
    # Appended to by the loader's workers: a local file (or a local copy of one in a bucket)
    # that ends up beside the reports.
    skip_log = paths.Mirror(paths.join(staging, "bad_samples.jsonl" if jax.process_count() == 1
                                       else f"bad_samples.process{jax.process_index()}.jsonl"))
    ds = datasets.eval_dataset(source, spec, local, skip_log=skip_log.local)
    n = len(source)
    scores = np.full((n, num_classes), np.nan, np.float32)
    labels = np.full(n, -1, np.int64)
    failed = np.zeros(n, bool)
    seen = np.zeros(n, np.int32)
    video_ids: dict[int, str] = {}  # this process's rows

    def record(out):
        out = parallel.to_host(out)
        for row in np.nonzero(out["index"] >= 0)[0]:
            i = int(out["index"][row])
            seen[i] += 1
            labels[i] = out["label"][row]
            if out["mask"][row]:
                scores[i] = out["scores"][row]
            failed[i] |= bool(out["failed"][row])

    previous = None
    batches = loading.to_iterator(ds, loading.loader_settings(config.data))
    for batch in tqdm(batches, total=len(ds), desc="test", unit="batch", disable=not show):
        feed = {k: batch[k] for k in ("frames", "hw", *ROW_KEYS) if k in batch}
        out = score(variables, parallel.to_global(feed, mesh))  # dispatched, not waited on
        video_ids.update((int(i), str(v)) for i, v in zip(batch["index"], batch["video_id"])
                         if i >= 0)
        if previous is not None:
            record(previous)  # one batch late: the device is already busy with this one
        previous = out
    if previous is not None:
        record(previous)
    if not (seen == 1).all():  # the exactly-once invariant: never expected to fire
        raise RuntimeError(f"videos scored {sorted(set(seen.tolist()))} times, expected once each")

    video_ids = _all_video_ids(video_ids, n)
    pred = np.where(failed, -1, np.nan_to_num(scores, nan=-1).argmax(-1))
    correct1 = losses.topk_correct_numpy(np.nan_to_num(scores, nan=-1), labels, 1) & ~failed
    correct5 = losses.topk_correct_numpy(np.nan_to_num(scores, nan=-1), labels, 5) & ~failed
    summary = {
        "top1": float(correct1.mean()), "top5": float(correct5.mean()),
        "mean_class_top1": metrics.mean_class_top1(correct1, labels, num_classes), "count": n,
        "failed": int(failed.sum()), "checkpoint": what,
        # Lines of the list that could not be parsed: not scored, not in count or Top-1.
        "skipped_lines": len(skipped), "listed": n + len(skipped),
        "skipped": [dataclasses.asdict(line) for line in skipped],
        "list": getattr(source, "list_file", repr(source)),
        "list_sha256": source.fingerprint() if hasattr(source, "fingerprint") else None,
        "num_seg": spec.num_seg, "views": spec.views,
        "devices": mesh.devices.size, "processes": jax.process_count(),
        "batch_per_device": per_device,
        "views_per_call": views_per_call or spec.views * per_device,
        "compilations": compiles.total, "compiled": compiles.compiled,
        "config": json.loads(config.to_json_best_effort()),
    }
    skip_log.close()  # each process's bad-sample log is in the staging directory
    checkpoint.sync("ppsn:test:logs")
    if show:
        _write_reports(staging, video_ids, labels, pred, scores, failed, names, summary)
        score_files.write(staging, score_files.RunScores(
            np.asarray(video_ids), labels, scores, failed, what, summary["list"],
            summary["list_sha256"] or ""))
        checkpoint.swap_in(output_dir, "summary.json")
    log.info(compiles.summary())
    lines = f", {len(skipped)} list lines skipped (not scored)" if skipped else ""
    print(f"Top-1: {summary['top1']:.4f}  Top-5: {summary['top5']:.4f}  "
          f"mean class Top-1: {summary['mean_class_top1']:.4f}  ({n} videos, "
          f"{summary['failed']} failed to decode{lines}; reports in {output_dir})")
    return summary


def _all_video_ids(local: dict[int, str], n: int) -> list[str]:
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


def _write_reports(output_dir, video_ids, labels, pred, scores, failed, names, summary):
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
