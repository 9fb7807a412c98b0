"""The training loop: data, jitted steps, logging, validation, best model, checkpoints.

``train_and_evaluate(config, workdir)`` is what ``python -m ppsn.main`` runs; notebooks and
tests call it directly. Resuming is automatic: if ``workdir/checkpoints`` holds a checkpoint,
the run continues from it (train state, rng and the Grain iterator position), before any
``init_from`` / ``pretrained`` option is looked at.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import time

import jax
import numpy as np

from ppsn import checkpoint, parallel
from ppsn.data import datasets, pipeline
from ppsn.train import distill, initialize, optim, steps

log = logging.getLogger(__name__)

BEST_DIR = "best"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss; the checkpoints on disk predate it."""


@dataclasses.dataclass
class _Meter:
    """Running sums of the step metrics between two log lines."""

    values: list = dataclasses.field(default_factory=list)
    reader: float = 0.0
    start: float = dataclasses.field(default_factory=time.perf_counter)

    def fetch(self, first_step: int) -> dict:
        """Fetch the pending device metrics, check them, average them."""
        host = [parallel.to_host(m) for m in self.values]
        for i, m in enumerate(host):
            if not (np.isfinite(m["loss"]) and np.isfinite(m["param_norm"])):
                raise NonFiniteLossError(
                    f"non-finite loss {m['loss']} (parameter norm {m['param_norm']}) at step "
                    f"{first_step + i + 1}: stopping; the checkpoints and the best model on disk "
                    "are from before it")
        out = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        out["lr"] = float(host[-1]["lr"])
        return out


def _log_line(epoch, num_epochs, step, m, batch_cost, reader_cost, ips, eta):
    distilled = "kd" in m or "dml" in m  # then the loss's parts are logged too
    parts = "".join(f"{k}: {m[k]:.5f} " for k in ("ce", "kd", "dml", "ce_teacher")
                    if distilled and k in m)
    return (f"epoch:[{epoch:3d}/{num_epochs:<3d}] train step:{step:<6d} loss: {m['loss']:.5f} "
            f"{parts}top1: {m['top1']:.5f} top5: {m['top5']:.5f} lr: {m['lr']:.6f} "
            f"batch_cost: {batch_cost:.5f} sec, reader_cost: {reader_cost:.5f} sec, "
            f"ips: {ips:.2f} instance/sec. ETA: {eta}")


class _Writer:
    """TensorBoard scalars on process 0 (tensorboardX: no TensorFlow needed)."""

    def __init__(self, workdir):
        self._writer = None
        if jax.process_index() == 0:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def scalars(self, prefix, values, step):
        if self._writer:
            for k, v in values.items():
                self._writer.add_scalar(f"{prefix}/{k}", v, step)
            self._writer.flush()

    def close(self):
        if self._writer:
            self._writer.close()


def evaluate(eval_fn, state, source, spec, global_batch, mesh, num_workers=0) -> dict:
    """Loss / Top-1 / Top-5 over the whole source, each video counted exactly once."""
    local = parallel.check_batch_size(global_batch, mesh)
    ds = pipeline.eval_dataset(source, spec, local)
    totals = None
    for batch in pipeline.to_iterator(ds, num_workers):
        sums = eval_fn(state, parallel.to_global(
            {k: batch[k] for k in ("frames", "label", "mask")}, mesh))
        totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    totals = parallel.to_host(totals)
    count = max(float(totals["count"]), 1.0)
    return {"loss": float(totals["loss"]) / count, "top1": float(totals["top1"]) / count,
            "top5": float(totals["top5"]) / count, "count": int(totals["count"])}


def _best_top1(workdir) -> float:
    meta = os.path.join(workdir, BEST_DIR, checkpoint.META_FILE)
    if os.path.exists(meta):
        with open(meta) as f:
            return float(json.load(f).get("top1", -1.0))
    return -1.0


def train_and_evaluate(config, workdir: str) -> dict:
    """Train (and validate) per ``config``; returns the last validation metrics (or {})."""
    parallel.initialize_distributed()
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        datasets.ensure_toy_data(config.data)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("ppsn: data ready")

    mesh = parallel.make_mesh()
    num_classes = config.model.num_classes
    train_source = datasets.make_source(config.data, "train", num_classes)
    train_spec = datasets.clip_spec(config.data, "train")
    local_batch = parallel.check_batch_size(config.batch_size, mesh)
    steps_per_epoch = len(train_source) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{train_source!r} has fewer videos than one batch ({config.batch_size})")
    total_steps = config.num_epochs * steps_per_epoch
    if config.max_steps > 0:
        total_steps = min(total_steps, config.max_steps)

    model = initialize.build_model(config)
    mode = distill.check_config(config.distill)
    teacher = distill.teacher_model(config, model.dtype) if mode else None
    teacher_variables = (distill.load_teacher_variables(config, teacher) if mode == "kd"
                         else None)

    def scratch_state_variables(seed):
        variables = initialize.scratch_variables(model, seed)
        if mode != "dml":
            return variables
        other = initialize.scratch_variables(teacher, seed + 1)
        return distill.pair_variables(variables, other)

    schedule = optim.make_schedule(config.optim, config.num_epochs, steps_per_epoch)
    abstract_vars = jax.eval_shape(lambda: scratch_state_variables(0))
    tx = optim.make_optimizer(config.optim, abstract_vars["params"], config.num_epochs,
                              steps_per_epoch)
    step_cfg = steps.StepConfig(model=model, tx=tx, schedule=schedule, num_classes=num_classes,
                                label_smoothing=config.loss.label_smoothing,
                                mixup_alpha=config.loss.mixup_alpha, distill_mode=mode,
                                teacher=teacher, temperature=config.distill.temperature,
                                distill_weight=config.distill.weight)
    train_fn, eval_fn = steps.jit_steps(step_cfg, mesh, teacher_variables)
    if mode:
        log.info("distillation %s: teacher ResNet%d-vd%s, T=%g, w=%g", mode, teacher.depth,
                 f" from {config.distill.teacher_checkpoint}" if config.distill.teacher_checkpoint
                 else " from scratch", config.distill.temperature, config.distill.weight)

    skip_log = os.path.join(workdir, f"bad_samples.process{jax.process_index()}.jsonl")
    train_ds = pipeline.train_dataset(train_source, train_spec, local_batch, config.seed,
                                      skip_log=skip_log)
    data_iter = pipeline.to_iterator(train_ds, config.data.num_workers)

    ckpt = checkpoint.TrainCheckpointer(workdir, config.keep_checkpoints)
    rng = jax.random.PRNGKey(config.seed)
    rep = parallel.replicated(mesh)
    if ckpt.latest_step() is not None:
        abstract_state = jax.eval_shape(lambda: steps.create_state(
            scratch_state_variables(0), tx))
        abstract_state = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), abstract_state)
        state, rng, start = ckpt.restore(abstract_state, jax.ShapeDtypeStruct(rng.shape, rng.dtype, sharding=rep), data_iter)
        log.info("resumed from %s at step %d", ckpt.directory, start)
    else:
        variables = initialize.initial_variables(config, model)
        if mode == "dml":  # the second model: from its checkpoint if given, else from scratch
            other = (distill.load_teacher_variables(config, teacher)
                     if config.distill.teacher_checkpoint
                     else jax.tree.map(np.asarray, initialize.scratch_variables(teacher, config.seed + 1)))
            variables = distill.pair_variables(variables, other)
        state = steps.create_state(variables, tx)
        start = 0
    state = jax.device_put(state, rep)
    rng = jax.device_put(rng, rep)

    val_source = val_spec = None
    if config.validate:
        val_source = datasets.make_source(config.data, "valid", num_classes)
        val_spec = datasets.clip_spec(config.data, "valid")
    best_top1 = _best_top1(workdir)
    writer = _Writer(workdir)
    log.info("training %s: %d videos, %d steps per epoch, %d steps, global batch %d on %d "
             "devices (%d processes)", type(model).__name__, len(train_source), steps_per_epoch,
             total_steps, config.batch_size, mesh.devices.size, jax.process_count())

    meter = _Meter()
    replaced = 0
    last_val: dict = {}
    step_times: list[float] = []
    first_pending = start
    try:
        for step in range(start, total_steps):
            t0 = time.perf_counter()
            batch = next(data_iter)
            meter.reader += time.perf_counter() - t0
            replaced += int(batch["replaced"].sum())
            state, metrics = train_fn(state, parallel.to_global(
                {"frames": batch["frames"], "label": batch["label"]}, mesh), rng)
            meter.values.append(metrics)
            done = step + 1
            epoch_end = done % steps_per_epoch == 0
            if done % config.log_interval == 0 or epoch_end or done == total_steps:
                m = meter.fetch(first_pending)
                elapsed = time.perf_counter() - meter.start
                n = len(meter.values)
                step_times.append(elapsed / n)
                eta = datetime.timedelta(seconds=int(np.mean(step_times[-20:]) * (total_steps - done)))
                epoch = math.ceil(done / steps_per_epoch)
                log.info(_log_line(epoch, config.num_epochs, done, m, elapsed / n,
                                   meter.reader / n, config.batch_size * n / elapsed, eta))
                writer.scalars("train", m, done)
                meter, first_pending = _Meter(), done
            if epoch_end and config.validate and (done // steps_per_epoch) % config.val_interval == 0:
                epoch = done // steps_per_epoch
                last_val = evaluate(eval_fn, state, val_source, val_spec,
                                    config.valid_batch_size, mesh, config.data.num_workers)
                log.info(f"epoch:[{epoch:3d}/{config.num_epochs:<3d}] val loss: "
                         f"{last_val['loss']:.5f} top1: {last_val['top1']:.5f} top5: "
                         f"{last_val['top5']:.5f} ({last_val['count']} videos)")
                writer.scalars("val", last_val, done)
                if last_val["top1"] > best_top1:
                    best_top1 = last_val["top1"]
                    checkpoint.save_variables(  # every process takes part; replaces the old best
                        os.path.join(workdir, BEST_DIR),
                        parallel.to_host(distill.student_variables(state.params,
                                                                   state.batch_stats)),
                        {"depth": config.model.depth, "num_classes": num_classes,
                         "top1": best_top1, "epoch": epoch, "step": done, "layout": "ppsn",
                         **({"distill": mode} if mode else {})}, force=True)
                    log.info(f"Already save the best model (top1 acc){best_top1:.4f}")
            if done % config.checkpoint_every_steps == 0 or done == total_steps:
                if meter.values:  # never checkpoint a state whose losses were not checked
                    meter.fetch(first_pending)
                ckpt.save(done, state, rng, data_iter)
    finally:
        ckpt.wait()
        ckpt.close()
        writer.close()
    entries = pipeline.read_skip_log(skip_log)
    log.info("data: %d bad samples replaced during training. %s", replaced,
             pipeline.summarize_skips(entries) if entries else "")
    if last_val:
        log.info("best validation top1 %.4f (model in %s)", best_top1,
                 os.path.join(workdir, BEST_DIR))
    return last_val
