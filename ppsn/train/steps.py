"""Pure step functions: ``train_step(state, batch, rng)`` and ``eval_step(state, batch)``.

Batches arrive as uint8 frames; normalization and mixup happen here, on the device. ``rng``
is the run's base key; the step's randomness is ``fold_in(rng, state.step)``, so a resumed run
draws exactly what an uninterrupted one would. ``jit_steps`` compiles them with explicit
shardings over a mesh (the train state replicated and donated, batches split along the batch
axis). Distillation (:mod:`ppsn.train.distill`): with ``kd`` the frozen teacher's variables are
one more, replicated and never donated, argument of the train step; with ``dml`` the state holds
both models.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from ppsn import parallel
from ppsn.data.transforms import normalize
from ppsn.train import distill, losses


@flax.struct.dataclass
class TrainState:
    """Everything a step changes."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What the steps need besides the state: the model and the loss settings."""

    model: Any  # a flax module: TSN
    tx: optax.GradientTransformation
    schedule: Callable
    num_classes: int
    label_smoothing: float = 0.1
    mixup_alpha: float = 0.2
    distill_mode: str = ""  # '', 'kd' or 'dml'
    teacher: Any = None  # the teacher TSN for 'kd' / 'dml'
    temperature: float = 1.0
    distill_weight: float = 1.0


def create_state(variables, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                      batch_stats=variables["batch_stats"], opt_state=tx.init(variables["params"]))


def train_step(cfg: StepConfig, state: TrainState, batch, rng,
               teacher_variables=None) -> tuple[TrainState, dict]:
    """One optimizer step. ``teacher_variables``: the frozen teacher (``kd`` only).

    Metrics: ``loss`` (the total), ``ce`` (the student's label-smoothed, mixed CE), with
    distillation ``kd`` or ``dml`` (the weighted distillation term) and, for ``dml``,
    ``ce_teacher``; ``top1``/``top5`` of the student on the mixed labels, ``lr``, ``param_norm``."""
    rng = jax.random.fold_in(rng, state.step)
    mix_rng, dropout_rng = jax.random.split(rng)
    images = normalize(batch["frames"])
    labels = batch["label"]
    if cfg.mixup_alpha > 0:
        images, labels_b, lam = losses.mixup(images, labels, mix_rng, cfg.mixup_alpha)
    else:
        labels_b, lam = labels, jnp.float32(1.0)

    def mixed_ce(logits):
        ce_a = losses.smoothed_cross_entropy(logits, labels, cfg.num_classes, cfg.label_smoothing)
        ce_b = losses.smoothed_cross_entropy(logits, labels_b, cfg.num_classes, cfg.label_smoothing)
        return jnp.mean(lam * ce_a + (1.0 - lam) * ce_b)

    if cfg.distill_mode == "kd":
        if teacher_variables is None:
            raise ValueError("distill_mode='kd' needs the teacher's variables")
        teacher_logits = jax.lax.stop_gradient(
            cfg.teacher.apply(teacher_variables, images, train=False))

    def loss_fn(params):
        if cfg.distill_mode == "dml":
            s_rng, t_rng = jax.random.split(dropout_rng)
            logits, s_updates = cfg.model.apply(
                {"params": params[distill.STUDENT], "batch_stats": state.batch_stats[distill.STUDENT]},
                images, train=True, rngs={"dropout": s_rng}, mutable=["batch_stats"])
            t_logits, t_updates = cfg.teacher.apply(
                {"params": params[distill.TEACHER], "batch_stats": state.batch_stats[distill.TEACHER]},
                images, train=True, rngs={"dropout": t_rng}, mutable=["batch_stats"])
            ce, ce_teacher = mixed_ce(logits), mixed_ce(t_logits)
            dml = cfg.distill_weight * jnp.mean(distill.dml_loss(logits, t_logits, cfg.temperature))
            parts = {"ce": ce, "ce_teacher": ce_teacher, "dml": dml}
            new_stats = distill.pair(s_updates["batch_stats"], t_updates["batch_stats"])
            return ce + ce_teacher + dml, (logits, new_stats, parts)
        logits, updates = cfg.model.apply(
            {"params": params, "batch_stats": state.batch_stats}, images, train=True,
            rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
        ce = mixed_ce(logits)
        parts = {"ce": ce}
        loss = ce
        if cfg.distill_mode == "kd":
            parts["kd"] = cfg.distill_weight * jnp.mean(
                distill.kd_loss(logits, teacher_logits, cfg.temperature))
            loss = ce + parts["kd"]
        return loss, (logits, updates["batch_stats"], parts)

    (loss, (logits, batch_stats, parts)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = cfg.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    def mixed(k):
        return jnp.mean(lam * losses.topk_correct(logits, labels, k)
                        + (1.0 - lam) * losses.topk_correct(logits, labels_b, k))

    metrics = {"loss": loss, **parts, "top1": mixed(1), "top5": mixed(min(5, cfg.num_classes)),
               "lr": cfg.schedule(state.step),
               # Finite iff every new parameter is: the loop never checkpoints a broken state.
               "param_norm": optax.tree.norm(params)}
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, metrics


def eval_step(cfg: StepConfig, state: TrainState, batch) -> dict:
    """Sums over the real (``mask``) examples: loss (no smoothing), top1, top5, count."""
    images = normalize(batch["frames"])
    logits = cfg.model.apply(distill.student_variables(state.params, state.batch_stats), images,
                             train=False)
    labels = jnp.maximum(batch["label"], 0)  # padding carries -1
    mask = batch["mask"].astype(jnp.float32)
    ce = losses.smoothed_cross_entropy(logits, labels, cfg.num_classes, 0.0)
    return {"loss": jnp.sum(ce * mask),
            "top1": jnp.sum(losses.topk_correct(logits, labels, 1) * mask),
            "top5": jnp.sum(losses.topk_correct(logits, labels, min(5, cfg.num_classes)) * mask),
            "count": jnp.sum(mask)}


def jit_steps(cfg: StepConfig, mesh, teacher_variables=None):
    """``(train_step(state, batch, rng), eval_step(state, batch))`` compiled for ``mesh``.

    With ``kd``, ``teacher_variables`` are placed like the state (replicated) once and bound
    to the train step as an argument that is never donated, so they stay bit-identical."""
    rep, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    if cfg.distill_mode == "kd":
        teacher = jax.device_put(teacher_variables, rep)
        jitted = jax.jit(lambda s, b, r, t: train_step(cfg, s, b, r, t),
                         in_shardings=(rep, data, rep, rep), out_shardings=(rep, rep),
                         donate_argnums=0)

        def train(s, b, r):
            return jitted(s, b, r, teacher)

        train.teacher_variables = teacher
    else:
        train = jax.jit(lambda s, b, r: train_step(cfg, s, b, r), in_shardings=(rep, data, rep),
                        out_shardings=(rep, rep), donate_argnums=0)
    evaluate = jax.jit(lambda s, b: eval_step(cfg, s, b), in_shardings=(rep, data),
                       out_shardings=rep)
    return train, evaluate
