"""Pure step functions, written once against a task (:mod:`ppsn.train.tasks`).

``train_step(cfg, state, batch, rng, constants, mesh, schedule_values)`` and ``eval_rows(cfg,
state, batch)`` (per example, what validation scores a list with through
:mod:`ppsn.evaluation.scoring`). Batches arrive as uint8 frames; normalization and mixup happen
here, on the device. ``rng`` is the run's base key; the step's randomness is ``fold_in(rng,
state.step)``, so a resumed run draws exactly what an uninterrupted one would. ``jit_steps``
compiles them with explicit shardings over a mesh: the train state replicated and donated,
batches split along the batch axis, the task's ``constants`` (a ``kd`` teacher) and the
schedule's numbers replicated once and never donated.

Nothing of the batch crosses devices: mixup mixes each device's shard within itself (as
PaddleVideo mixes each GPU's batch) and the loss and gradients are computed per shard
(:func:`sharded_loss_and_grads`), so the step's only collectives are the float32 all-reduces of
the gradients, of the BatchNorm statistics (``config.model.sync_bn``; none without it) and of
the scalar metrics (checked from the compiled program in ``tests/train/test_steps.py``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from ppsn import parallel
from ppsn.data.transforms import normalize
from ppsn.evaluation import scoring
from ppsn.train import losses, optim


@flax.struct.dataclass
class TrainState:
    """Everything a step changes."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What the steps need besides the state: the task, the optimizer and mixup. ``tx`` and
    ``schedule`` are made of the numbers in ``schedule_values``; the jitted train step receives
    those numbers as an argument (:func:`step_constants`) and makes its optimizer of them, so
    its program does not depend on the run's length or learning rate."""

    task: Any  # a ppsn.train.tasks.Task
    tx: optax.GradientTransformation
    schedule: Callable
    mixup_alpha: float = 0.2
    optim: Any = None  # config.optim
    schedule_values: dict | None = None  # optim.schedule_values


def step_config(task, config, steps_per_epoch: int) -> StepConfig:
    """The recipe's optimizer and schedule (``config.optim``, ``num_epochs``) for ``task``."""
    params = jax.eval_shape(lambda: task.scratch_variables(0))["params"]
    values = optim.schedule_values(config.optim, config.num_epochs, steps_per_epoch)
    schedule = optim.schedule_from(values)
    return StepConfig(
        task=task, tx=optim.make_optimizer(config.optim, params, schedule=schedule),
        schedule=schedule, mixup_alpha=config.loss.mixup_alpha, optim=config.optim,
        schedule_values=values)


def step_constants(cfg: StepConfig) -> dict:
    """The jitted train step's last argument: the task's constants (a ``kd`` teacher) and the
    schedule's numbers."""
    return {"task": cfg.task.constants, "schedule": cfg.schedule_values}


def create_state(variables, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                      batch_stats=variables["batch_stats"], opt_state=tx.init(variables["params"]))


def mixup_per_shard(images, labels, rng, alpha: float, mesh=None):
    """Mixup with no traffic between devices: one ``lam ~ Beta(alpha, alpha)`` for the global
    batch, and each device's shard (of ``mesh``'s batch axes) mixed with a permutation of
    itself, drawn from ``rng`` folded with the shard's index. Without a mesh the whole batch is
    one shard. The loss and accuracy weights stay exact: every example has the same ``lam``.
    Returns ``(mixed images, labels_b, lam)`` like :func:`ppsn.train.losses.mixup`."""
    lam_rng, perm_rng = jax.random.split(rng)
    lam = jax.random.beta(lam_rng, alpha, alpha)
    if mesh is None:
        return losses.mixup(images, labels, perm_rng, alpha, lam)

    def mix_shard(images, labels, perm_rng, lam):
        shard_rng = jax.random.fold_in(perm_rng, jax.lax.axis_index(parallel.BATCH_AXES))
        mixed, labels_b, _ = losses.mixup(images, labels, shard_rng, alpha, lam)
        return mixed, labels_b

    rows = P(parallel.BATCH_AXES)
    mixed, labels_b = jax.shard_map(mix_shard, mesh=mesh, in_specs=(rows, rows, P(), P()),
                                    out_specs=(rows, rows))(images, labels, perm_rng, lam)
    return mixed, labels_b, lam


def sharded_loss_and_grads(task, params, batch_stats, images, targets, rng, constants, mesh):
    """The task's loss on each device's shard of the batch (a ``shard_map`` over ``mesh``'s
    batch axes), and its gradients: ``(loss, logits, batch_stats, parts, grads)``.

    Each device differentiates its own float32 copy of the parameters, so the gradients are
    averaged over the devices in **float32** (an explicit ``pmean``), whatever the compute
    dtype: the bf16 casts happen after the copy, on each device. BatchNorm statistics are
    averaged over the devices inside the model when ``config.model.sync_bn``, else each
    device normalizes with its own and the new running statistics are averaged here. Loss
    and parts are the global batch's means (every shard has the same number of rows)."""
    axes = parallel.BATCH_AXES
    rows = P(axes)

    def shard(params, batch_stats, images, labels, labels_b, lam, rng, constants):
        local = jax.tree.map(lambda p: jax.lax.pcast(p, axes, to="varying"), params)
        shard_targets = losses.Targets(labels, labels_b, lam)

        def loss_fn(p):
            return task.loss(p, batch_stats, images, shard_targets, rng, constants, axes)

        (loss, (logits, stats, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(local)
        mean = functools.partial(jax.lax.pmean, axis_name=axes)
        if not task.config.model.get("sync_bn", True):
            stats = mean(stats)  # else already the same on every device
        return mean(loss), logits, stats, mean(parts), mean(grads)

    return jax.shard_map(shard, mesh=mesh, in_specs=(P(), P(), rows, rows, rows, P(), P(), P()),
                         out_specs=(P(), rows, P(), P(), P()))(
        params, batch_stats, images, targets.labels, targets.labels_b, targets.lam, rng,
        constants)


def train_step(cfg: StepConfig, state: TrainState, batch, rng, constants, mesh,
               schedule_values) -> tuple[TrainState, dict]:
    """One optimizer step (``mesh``: the devices the batch is split over, for mixup;
    ``schedule_values``: the schedule's numbers, :func:`step_constants`' ``schedule``).

    Metrics: ``loss`` (the total) and the task's parts (``ce``, ``kd``, ...), ``top1``/``top5``
    of the served model on the mixed labels, ``lr``, ``param_norm``."""
    task = cfg.task
    rng = jax.random.fold_in(rng, state.step)
    mix_rng, dropout_rng = jax.random.split(rng)
    images = normalize(batch["frames"])
    if cfg.mixup_alpha > 0:
        images, labels_b, lam = mixup_per_shard(images, batch["label"], mix_rng,
                                                cfg.mixup_alpha, mesh)
        targets = losses.Targets(batch["label"], labels_b, lam)
    else:
        targets = losses.Targets.unmixed(batch["label"])

    loss, logits, batch_stats, parts, grads = sharded_loss_and_grads(
        task, state.params, state.batch_stats, images, targets, dropout_rng, constants,
        mesh if mesh is not None else parallel.make_mesh(jax.devices()[:1]))
    schedule = optim.schedule_from(schedule_values)
    tx = optim.make_optimizer(cfg.optim, state.params, schedule=schedule)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    def accuracy(k):
        return jnp.mean(targets.mix(lambda y: losses.topk_correct(logits, y, k)))

    metrics = {"loss": loss, **parts, "top1": accuracy(1),
               "top5": accuracy(min(5, task.num_classes)), "lr": schedule(state.step),
               # Finite iff every new parameter is: the loop never checkpoints a broken state.
               "param_norm": optax.tree.norm(params)}
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, metrics


def eval_rows(cfg: StepConfig, state: TrainState, batch) -> dict:
    """Per example of the served model, float32 ``[batch]``: ``loss`` (cross-entropy, no
    smoothing), ``top1`` and ``top5`` (1.0 where correct); padding rows are scored too (the
    caller's mask drops them)."""
    task = cfg.task
    images = normalize(batch["frames"])
    logits = task.serving_model.apply(task.serving_variables(state.params, state.batch_stats),
                                      images, train=False)
    labels = jnp.maximum(batch["label"], 0)  # padding carries -1
    return {"loss": losses.smoothed_cross_entropy(logits, labels, task.num_classes, 0.0),
            "top1": losses.topk_correct(logits, labels, 1),
            "top5": losses.topk_correct(logits, labels, min(5, task.num_classes))}


def jit_eval(cfg: StepConfig, mesh):
    """The jitted ``evaluate(state, batch)`` validation scores a list with
    (:func:`ppsn.evaluation.scoring.score_dataset`): :func:`eval_rows` and the batch's rows,
    replicated."""
    rep, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    return jax.jit(scoring.with_rows(lambda s, b: eval_rows(cfg, s, b)),
                   in_shardings=(rep, data), out_shardings=rep)


def jit_train(cfg: StepConfig, mesh):
    """The jitted ``train_step(state, batch, rng, step_constants(cfg))`` over ``mesh`` (what
    :func:`jit_steps` runs; ``python -m ppsn.benchmark aot`` compiles it for other devices)."""
    rep, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    return jax.jit(lambda s, b, r, c: train_step(cfg, s, b, r, c["task"], mesh, c["schedule"]),
                   in_shardings=(rep, data, rep, rep), out_shardings=(rep, rep),
                   donate_argnums=0)


def jit_steps(cfg: StepConfig, mesh):
    """``(train(state, batch, rng), evaluate(state, batch))`` compiled for ``mesh``
    (``evaluate``: :func:`jit_eval`'s, the one way a list is scored).

    The :func:`step_constants` are placed like the state (replicated) once and bound to the
    train step as an argument that is never donated, so they stay bit-identical;
    ``train.step_constants`` holds them on the devices, ``train.constants`` the task's."""
    rep = parallel.replicated(mesh)
    constants = jax.device_put(step_constants(cfg), rep)
    jitted = jit_train(cfg, mesh)

    def train(state, batch, rng):
        return jitted(state, batch, rng, constants)

    train.jitted = jitted
    train.step_constants = constants
    train.constants = constants["task"]
    return train, jit_eval(cfg, mesh)
