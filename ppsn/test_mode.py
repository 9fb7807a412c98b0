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
each batch's results are fetched while the device computes the next one
(:func:`ppsn.evaluation.scoring.score_dataset`, validation's path too). How many views go
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
import dataclasses
import json
import logging

import jax
import numpy as np
from tqdm import tqdm

from ppsn import backend, checkpoint, compilation, parallel, paths, preflight, workdir_lock
from ppsn.data import datasets, loading
from ppsn.data.transforms import normalize, ten_crop_on_device
from ppsn.evaluation import metrics, reports, scoring
from ppsn.evaluation import scores as score_files
from ppsn.models import chunked_logits
from ppsn.train import initialize, losses

log = logging.getLogger(__name__)


def score_fn(model, mesh, spec, views_per_chunk: int = 0):
    """jitted ``score(variables, batch)``: ``{'scores': softmax over classes}`` for a (global)
    batch, plus the batch's :data:`ppsn.evaluation.scoring.ROW_KEYS` present, all replicated:
    every process sees every row. With ``spec.device_crops`` the TenCrop views are cut here from
    ``batch['frames']`` and ``batch['hw']``. ``views_per_chunk > 0`` runs the views of each video
    that many at a time (:func:`ppsn.models.chunked_logits`); 0 runs the whole batch in one call."""
    rep, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)

    def score(variables, batch):
        frames = batch["frames"]
        if spec.device_crops:
            frames = ten_crop_on_device(frames, batch["hw"], spec.target_size)
        if views_per_chunk:
            logits = chunked_logits(model, variables, normalize(frames), views_per_chunk)
        else:
            logits = model.apply(variables, normalize(frames), train=False)
        return {"scores": jax.nn.softmax(logits, axis=-1)}

    return jax.jit(scoring.with_rows(score), in_shardings=(rep, data), out_shardings=rep)


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
    mesh, inputs = _preflight(config, weights, output_dir, force, held)
    plan = _plan(config, len(inputs.test), mesh)
    staging, skip_log = _staging(output_dir)
    ledger = _score(config, plan, inputs, mesh, skip_log.local)
    summary = _summary(config, plan, inputs, mesh, ledger, compiles)
    skip_log.close()  # each process's bad-sample log is in the staging directory
    checkpoint.sync("ppsn:test:logs")
    if jax.process_index() == 0:
        _swap_in(output_dir, staging, ledger, inputs, summary)
    log.info(compiles.summary())
    skipped = summary["skipped_lines"]
    lines = f", {skipped} list lines skipped (not scored)" if skipped else ""
    print(f"Top-1: {summary['top1']:.4f}  Top-5: {summary['top5']:.4f}  "
          f"mean class Top-1: {summary['mean_class_top1']:.4f}  ({summary['count']} videos, "
          f"{summary['failed']} failed to decode{lines}; reports in {output_dir})")
    return summary


def _preflight(config, weights, output_dir, force, held):
    """The mesh and what pre-flight checked and built; holds the output's lock from here on."""
    parallel.initialize_distributed()
    compilation.use_persistent_cache(
        config.compilation_cache_dir or compilation.user_cache_dir(), output_dir)
    mesh = parallel.make_mesh()
    inputs = preflight.check(config, "test", mesh.devices.size, weights=weights,
                             output=output_dir, force=force)
    # One run writes an output at a time (process 0 holds OUTPUT.ppsn-lock until the end).
    held.enter_context(workdir_lock.job_lock(workdir_lock.output_lock_path(output_dir),
                                             f"the test output {output_dir}"))
    return mesh, inputs


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How the list is scored: the clips, the batch and the model."""

    spec: object  # a ppsn.data.clips.ClipSpec
    per_device: int
    local: int  # videos per process and batch
    views_per_call: int
    model: object


def _plan(config, num_videos: int, mesh) -> _Plan:
    spec = datasets.clip_spec(config.data, "test")
    per_device = parallel.smallest_filling_batch(num_videos, config.test_batch_per_device,
                                                 mesh.devices.size)
    local = parallel.check_batch_size(per_device * mesh.devices.size, mesh)
    views_per_call = backend.views_per_call(config.data.test_views_per_chunk)
    model = initialize.build_model(config)
    log.info("%s; compute dtype %s, convolutions %s; test batch %d per device (%d videos), "
             "%s per model call", parallel.describe(mesh), jax.numpy.dtype(model.dtype).name,
             model.conv_impl, per_device, per_device * mesh.devices.size,
             f"{views_per_call} views" if views_per_call else "all views of the batch")
    return _Plan(spec, per_device, local, views_per_call, model)


def _staging(output_dir: str):
    """The reports' home until the end, and this process's bad-sample log in it (appended to by
    the loader's workers: a local file, or a local copy of one in a bucket)."""
    staging = checkpoint.replacement_path(output_dir)
    if jax.process_index() == 0:
        checkpoint.prepare_replacement(output_dir)
    checkpoint.sync("ppsn:test:output")
    skip_log = paths.Mirror(paths.join(staging, "bad_samples.jsonl" if jax.process_count() == 1
                                       else f"bad_samples.process{jax.process_index()}.jsonl"))
    return staging, skip_log


def _score(config, plan: _Plan, inputs, mesh, skip_log: str) -> scoring.Ledger:
    """Every video of the list scored exactly once (checked), with its id."""
    variables, _ = inputs.weights
    variables = jax.device_put(variables, parallel.replicated(mesh))
    score = score_fn(plan.model, mesh, plan.spec, plan.views_per_call)
    ds = datasets.eval_dataset(inputs.test, plan.spec, plan.local, skip_log=skip_log)
    batches = tqdm(loading.to_iterator(ds, loading.loader_settings(config.data)),
                   total=len(ds), desc="test", unit="batch", disable=jax.process_index() != 0)
    return scoring.score_dataset(score, variables, batches, len(inputs.test), mesh,
                                 keep_ids=True)


def _summary(config, plan: _Plan, inputs, mesh, ledger: scoring.Ledger, compiles) -> dict:
    source, skipped = inputs.test, getattr(inputs.test, "skipped", [])
    scores, labels, failed = ledger.values["scores"], ledger.label, ledger.failed
    correct1 = losses.topk_correct_numpy(np.nan_to_num(scores, nan=-1), labels, 1) & ~failed
    correct5 = losses.topk_correct_numpy(np.nan_to_num(scores, nan=-1), labels, 5) & ~failed
    return {
        "top1": float(correct1.mean()), "top5": float(correct5.mean()),
        "mean_class_top1": metrics.mean_class_top1(correct1, labels, config.model.num_classes),
        "count": len(ledger), "failed": int(failed.sum()), "checkpoint": inputs.weights[1]["path"],
        # Lines of the list that could not be parsed: not scored, not in count or Top-1.
        "skipped_lines": len(skipped), "listed": len(ledger) + len(skipped),
        "skipped": [dataclasses.asdict(line) for line in skipped],
        "list": getattr(source, "list_file", repr(source)),
        "list_sha256": source.fingerprint() if hasattr(source, "fingerprint") else None,
        "num_seg": plan.spec.num_seg, "views": plan.spec.views,
        "devices": mesh.devices.size, "processes": jax.process_count(),
        "batch_per_device": plan.per_device,
        "views_per_call": plan.views_per_call or plan.spec.views * plan.per_device,
        "compilations": compiles.total, "compiled": compiles.compiled,
        "config": json.loads(config.to_json_best_effort()),
    }


def _swap_in(output_dir, staging, ledger: scoring.Ledger, inputs, summary: dict) -> None:
    """Process 0 writes the reports into the staging directory and renames it into place."""
    num_classes = ledger.values["scores"].shape[1]
    names = inputs.label_names or [str(i) for i in range(num_classes)]
    scores, failed = ledger.values["scores"], ledger.failed
    pred = np.where(failed, -1, np.nan_to_num(scores, nan=-1).argmax(-1))
    reports.write_reports(staging, ledger.video_ids, ledger.label, pred, scores, failed, names,
                          summary)
    score_files.write(staging, score_files.RunScores(
        np.asarray(ledger.video_ids), ledger.label, scores, failed, summary["checkpoint"],
        summary["list"], summary["list_sha256"] or ""))
    checkpoint.swap_in(output_dir, "summary.json")
