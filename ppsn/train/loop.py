"""The training loop, in its phases: set up, restore or initialize, then per step: log,
validate and keep the best, checkpoint.

``python -m ppsn.main`` runs ``train_and_evaluate`` through :mod:`ppsn.train_mode` (the
pre-flight). Resuming is automatic: if ``workdir/checkpoints`` holds a checkpoint,
the run continues from it (train state, rng and the Grain iterator position), before any
``init_from`` / ``pretrained`` option is looked at. What differs between objectives (plain,
``kd``, ``dml``) is the task's (:mod:`ppsn.train.tasks`), never the loop's.

The host keeps the devices busy (``train_steps``): batches are put on the devices
``PREFETCH_BATCHES`` ahead by a background thread (:mod:`ppsn.train.prefetch`), the host runs
at most ``MAX_STEPS_IN_FLIGHT`` steps ahead of the device, and each log interval's metrics
travel to the host as one array, asynchronously; its line is printed once it has arrived, and
every pending metric is checked before a checkpoint is written.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import math
import os
import time
from typing import Any

import jax
import numpy as np

from ppsn import (backend, checkpoint, compilation, parallel, paths, shared_workdir,
                  workdir_lock)
from ppsn.data import datasets, loading, loading_plan, toy
from ppsn.data.skip_log import log_consumed_skips, read_skip_log, summarize_skips
from ppsn.train import preemption, prefetch, reporting, steps, tasks, validation

log = logging.getLogger(__name__)

PREFETCH_BATCHES = 2  # global batches put on the devices ahead of the step that uses them
MAX_STEPS_IN_FLIGHT = 2  # dispatched steps the host may run ahead of the device


@dataclasses.dataclass
class Run:
    """Everything set up for a run, before any state exists."""

    config: Any
    workdir: str
    mesh: Any
    task: tasks.Task
    step_cfg: steps.StepConfig
    train_fn: Any
    eval_fn: Any
    num_videos: int
    steps_per_epoch: int
    total_steps: int
    data_iter: Any
    ckpt: checkpoint.TrainCheckpointer
    writer: reporting.Writer
    skip_log: paths.Mirror  # this process's bad-sample log
    val: tuple | None  # (source, spec) when validating
    skipped_lines: dict = dataclasses.field(default_factory=dict)  # list file -> SkippedLines


@dataclasses.dataclass
class Progress:
    """What the step loop accumulates."""

    meter: reporting.Meter
    best_top1: float
    in_flight: reporting.InFlight = dataclasses.field(default_factory=reporting.InFlight)
    last_val: dict = dataclasses.field(default_factory=dict)
    replaced: int = 0
    step_times: list = dataclasses.field(default_factory=list)
    data_wait_s: float = 0.0  # the host waiting for a batch, and for the device to catch up
    device_wait_s: float = 0.0


def setup(config, workdir: str, inputs_for, claim=None) -> Run:
    """Data, task, compiled steps, the data iterator, the checkpointer and the writer. Nothing
    is written into ``workdir`` before ``inputs_for(devices, workdir)`` (the pre-flight) passed;
    then ``claim(workdir)`` (if given) takes it (the lock, ``train.log``)."""
    parallel.initialize_distributed()
    workdir = os.fspath(paths.absolute(workdir))
    if jax.process_index() == 0:
        toy.ensure_toy_data(config.data)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("ppsn: data ready")

    mesh = parallel.make_mesh()
    log.info("%s; compute dtype %s, convolutions %s; batch %d = %s per device",
             parallel.describe(mesh), jax.numpy.dtype(backend.compute_dtype(config.amp)).name,
             backend.conv_impl(config.model.conv_impl), config.batch_size,
             f"{config.batch_size / mesh.devices.size:g}")
    inputs = inputs_for(mesh.devices.size, workdir)
    if claim is not None:
        claim(workdir)
    workdir = os.fspath(paths.makedirs(workdir))
    shared_workdir.check_shared(workdir)  # every process sees what process 0 writes
    compilation.use_persistent_cache(config.compilation_cache_dir, workdir)
    if jax.process_index() == 0:
        paths.path(paths.join(workdir, "config.json")).write_text(
            config.to_json_best_effort(indent=2))
    train_source = inputs.train
    local_batch = parallel.check_batch_size(config.batch_size, mesh)
    steps_per_epoch = len(train_source) // config.batch_size
    total_steps = config.num_epochs * steps_per_epoch
    if config.max_steps > 0:
        total_steps = min(total_steps, config.max_steps)

    task = tasks.make_task(config)
    log.info(task.describe())
    step_cfg = steps.step_config(task, config, steps_per_epoch)
    train_fn, eval_fn = steps.jit_steps(step_cfg, mesh)
    # Each process appends to its own log; in a bucket, to a local copy pushed at checkpoints.
    skip_log = paths.Mirror(paths.join(workdir, f"bad_samples.process{jax.process_index()}.jsonl"))
    train_spec = datasets.clip_spec(config.data, "train")
    parts = loading_plan.batch_parts(local_batch, jax.local_device_count())  # one per device
    train_ds = datasets.train_dataset(train_source, train_spec, local_batch, config.seed,
                                      parts=parts)
    loader = loading.planned_loader(
        config.data, **_plan_args(local_batch // parts * math.prod(train_spec.shape)),
        parts=parts)
    val = None
    if config.validate:
        val = (inputs.valid, datasets.clip_spec(config.data, "valid"))
    return Run(config=config, workdir=workdir, mesh=mesh, task=task, step_cfg=step_cfg,
               train_fn=train_fn, eval_fn=eval_fn,
               num_videos=len(train_source), steps_per_epoch=steps_per_epoch,
               total_steps=total_steps,
               data_iter=loading.to_iterator(train_ds, loader, parts),
               ckpt=checkpoint.TrainCheckpointer(workdir, config.keep_checkpoints,
                                                 global_batch=config.batch_size),
               writer=reporting.Writer(workdir), skip_log=skip_log, val=val,
               skipped_lines=inputs.skipped_lines())


def _plan_args(batch_bytes: int) -> dict:
    """What the loading plan needs to know about this process's devices and batches."""
    return dict(local_devices=jax.local_device_count(),
                accelerator=jax.default_backend() != "cpu", batch_bytes=batch_bytes)


def restore_or_initialize(run: Run):
    """``(state, rng, first step)``: from the latest train checkpoint (and the data iterator
    with it), else a new state from the task's initial variables."""
    rep = parallel.replicated(run.mesh)
    rng = jax.random.PRNGKey(run.config.seed)
    tx = run.step_cfg.tx
    if run.ckpt.latest_step() is not None:
        abstract = jax.eval_shape(lambda: steps.create_state(run.task.scratch_variables(0), tx))
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), abstract)
        state, rng, start = run.ckpt.restore(
            abstract, jax.ShapeDtypeStruct(rng.shape, rng.dtype, sharding=rep), run.data_iter)
        log.info("resumed from %s at step %d", run.ckpt.directory, start)
    else:
        state, start = steps.create_state(run.task.initial_variables(), tx), 0
    return jax.device_put(state, rep), jax.device_put(rng, rep), start


def log_progress(run: Run, progress: Progress, done: int) -> None:
    """Packs the interval's metrics into one array and starts its copy to the host; the line is
    printed when it has arrived (:func:`emit_logs`), without waiting for it here."""
    progress.in_flight.add(progress.meter.pack(run.config.log_interval))
    progress.meter = reporting.Meter(first_step=done)


def emit_logs(run: Run, progress: Progress, wait: bool = False) -> None:
    """Checks the metrics that have arrived (all of them with ``wait``), prints PaddleVideo's
    line for each interval, writes TensorBoard. A non-finite loss raises here."""

    def write(interval: reporting.Interval, m: dict) -> None:
        n, elapsed = interval.count, interval.elapsed
        progress.step_times.append(elapsed / n)
        eta = reporting.eta(progress.step_times, run.total_steps - interval.done)
        epoch = math.ceil(interval.done / run.steps_per_epoch)
        log.info(reporting.log_line(epoch, run.config.num_epochs, interval.done, m,
                                    run.task.log_parts, elapsed / n, interval.reader / n,
                                    run.config.batch_size * n / elapsed, eta))
        run.writer.scalars("train", m, interval.done)

    progress.in_flight.emit(write, wait)


def validate_and_keep_best(run: Run, progress: Progress, state, done: int) -> None:
    """Validation over the whole list; a better Top-1 replaces ``WORKDIR/best``."""
    epoch = done // run.steps_per_epoch
    source, spec = run.val
    batch_bytes = (run.config.valid_batch_size // jax.process_count()) * math.prod(spec.shape)
    val = validation.validate(run.eval_fn, state, source, spec, run.config.valid_batch_size,
                              run.mesh,
                              loading.loader_settings(run.config.data, **_plan_args(batch_bytes)),
                              log_every=run.config.log_interval)
    log.info(f"epoch:[{epoch:3d}/{run.config.num_epochs:<3d}] val loss: {val['loss']:.5f} "
             f"top1: {val['top1']:.5f} top5: {val['top5']:.5f} "
             f"mean_class_top1: {val['mean_class_top1']:.5f} ({val['count']} videos)")
    run.writer.scalars("val", val, done)
    progress.best_top1 = validation.keep_best(run.workdir, run.task, state, val,
                                              progress.best_top1, epoch, done)
    progress.last_val = val


def save_checkpoint(run: Run, progress: Progress, state, rng, done: int, position=None) -> None:
    """A train checkpoint of a state whose losses were checked (every metric up to ``done`` is
    fetched and checked first, so a non-finite step is never saved). ``position``: the data
    iterator's state after the batch of step ``done`` (the prefetcher's, which reads ahead;
    default ``run.data_iter`` itself)."""
    emit_logs(run, progress, wait=True)
    if progress.meter.values:
        progress.meter.pack(run.config.log_interval).fetch()  # checks; logged later
    run.ckpt.save(done, state, rng, run.data_iter if position is None else position,
                  run.task.meta())
    run.skip_log.push(now=True)
    reporting.push_logs()


def train_and_evaluate(config, workdir: str, inputs_for) -> dict:
    """Train (and validate) per ``config``; returns the last validation metrics (or {}).

    The log goes to stdout and is appended to ``WORKDIR/train.log``; with several processes
    only process 0 prints the per-step lines (the others print warnings and errors)."""
    parallel.initialize_distributed()
    workdir = os.fspath(paths.absolute(workdir))  # a gs:// URL stays one
    with reporting.run_logs(workdir, jax.process_index()) as logs, \
            contextlib.ExitStack() as held:
        def claim(workdir):  # once the pre-flight passed: the lock (process 0), then train.log
            held.enter_context(workdir_lock.job_lock(workdir_lock.train_lock_path(workdir),
                                                     f"--workdir={workdir}"))
            logs.open_file()

        return _train_and_evaluate(config, workdir, inputs_for, claim)


def _train_and_evaluate(config, workdir: str, inputs_for, claim) -> dict:
    compiles = compilation.CompileCounter().open()
    run = setup(config, workdir, inputs_for, claim)
    state, rng, start = restore_or_initialize(run)
    log.info("training %s: %d videos, %d steps per epoch, %d steps, global batch %d on %d "
             "devices (%d processes)", type(run.task.model).__name__, run.num_videos,
             run.steps_per_epoch, run.total_steps, config.batch_size, run.mesh.devices.size,
             jax.process_count())
    progress = Progress(meter=reporting.Meter(first_step=start),
                        best_top1=validation.best_top1(run.workdir))
    try:
        train_steps(run, progress, state, rng, start, run.total_steps)
    finally:
        compiles.close()
        run.ckpt.wait()
        run.ckpt.close()
        run.writer.close()
        run.skip_log.close()
    log.info(compiles.summary())
    summarize(run, progress)
    return progress.last_val


def train_steps(run: Run, progress: Progress, state, rng, start: int, stop: int):
    """Steps ``start`` to ``stop`` (log, validate, checkpoint on their schedule); returns the
    state. Batches come from a :class:`prefetch.DevicePrefetcher` over ``run.data_iter``."""
    config = run.config
    feed = _feed(run)
    pending = collections.deque()  # a small output of each step still being computed
    watch = preemption.Watch().__enter__()
    try:
        for step in range(start, stop):
            t0 = time.perf_counter()
            batch, skips = next(feed)
            waited = time.perf_counter() - t0
            progress.meter.reader += waited
            progress.data_wait_s += waited
            progress.replaced += log_consumed_skips(skips, run.skip_log.local, step)
            state, metrics = run.train_fn(state, batch, rng)
            progress.meter.values.append(metrics)
            pending.append(metrics["loss"])
            if len(pending) > MAX_STEPS_IN_FLIGHT:  # the host stays at most this far ahead
                t0 = time.perf_counter()
                pending.popleft().block_until_ready()
                progress.device_wait_s += time.perf_counter() - t0
            done = step + 1
            epoch_end = done % run.steps_per_epoch == 0
            if done % config.log_interval == 0 or epoch_end or done == run.total_steps:
                log_progress(run, progress, done)
            emit_logs(run, progress)
            # Validation and checkpoints are not step time: the meter leaves them out of the
            # next line's batch_cost, ips and ETA (the steps' own compute is waited for first).
            if epoch_end and run.val and (done // run.steps_per_epoch) % config.val_interval == 0:
                emit_logs(run, progress, wait=True)
                jax.block_until_ready(state)
                with progress.meter.excluded():
                    # The train workers stop while validation's run (one pool at a time) and
                    # restart at the next batch.
                    position = feed.position()
                    feed.close()
                    run.data_iter.set_state(position.get_state())
                    validate_and_keep_best(run, progress, state, done)
                    feed = _feed(run)
            scheduled = done % config.checkpoint_every_steps == 0 or done == run.total_steps
            if scheduled:
                jax.block_until_ready(state)
                with progress.meter.excluded():
                    save_checkpoint(run, progress, state, rng, done, feed.position())
            if watch.should_stop(done) and done < run.total_steps:
                _stop(run, progress, state, rng, done, feed.position(), scheduled, watch)
        t0 = time.perf_counter()
        jax.block_until_ready(state)
        progress.device_wait_s += time.perf_counter() - t0
        emit_logs(run, progress, wait=True)
    finally:
        watch.__exit__()
        feed.close()
    return state


def _stop(run: Run, progress: Progress, state, rng, done: int, position, saved: bool,
          watch: preemption.Watch):
    """A signal stopped the run after step ``done``: its checkpoint, one line, :class:`Stopped`."""
    if not saved:
        jax.block_until_ready(state)
        save_checkpoint(run, progress, state, rng, done, position)
    run.ckpt.wait()
    message = (f"stopped at step {done} of {run.total_steps} on a signal: checkpoint "
               f"{paths.join(run.ckpt.directory, str(done))} saved; the same command resumes "
               f"from it (exit status {watch.exit_code})")
    log.warning(message)
    raise preemption.Stopped(message, watch.exit_code)


def _feed(run: Run) -> prefetch.DevicePrefetcher:
    def prepare(batch):  # one part per local device: each put on its device as it is
        parts = batch if isinstance(batch, list) else [batch]
        return (parallel.parts_to_global([{k: p[k] for k in ("frames", "label")} for p in parts],
                                         run.mesh),
                {k: np.concatenate([p[k] for p in parts]) for k in ("replaced", "skipped")})

    return prefetch.DevicePrefetcher(run.data_iter, prepare, size=PREFETCH_BATCHES)


def summarize(run: Run, progress: Progress) -> None:
    entries = read_skip_log(run.skip_log.target)
    log.info("data: %d bad samples replaced during training. %s", progress.replaced,
             summarize_skips(entries) if entries else "")
    for list_file, skipped in run.skipped_lines.items():
        log.warning("data: %d lines of %s were skipped (not trained or validated on), e.g. %s",
                    len(skipped), list_file, skipped[0])
    if progress.last_val:
        log.info("best validation top1 %.4f (model in %s)", progress.best_top1,
                 paths.join(run.workdir, checkpoint.BEST_DIR))
