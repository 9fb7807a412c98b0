"""Pure step functions: ``train_step(state, batch, rng)`` and ``eval_step(state, batch)``.

Batches arrive as uint8 frames; normalization and mixup happen here, on the device. ``rng``
is the run's base key; the step's randomness is ``fold_in(rng, state.step)``, so a resumed run
draws exactly what an uninterrupted one would. ``jit_steps`` compiles them with explicit shardings over a mesh (the
train state replicated and donated, batches split along the batch axis).
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
from ppsn.train import losses


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


def create_state(variables, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                      batch_stats=variables["batch_stats"], opt_state=tx.init(variables["params"]))


def train_step(cfg: StepConfig, state: TrainState, batch, rng) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(rng, state.step)
    mix_rng, dropout_rng = jax.random.split(rng)
    images = normalize(batch["frames"])
    labels = batch["label"]
    if cfg.mixup_alpha > 0:
        images, labels_b, lam = losses.mixup(images, labels, mix_rng, cfg.mixup_alpha)
    else:
        labels_b, lam = labels, jnp.float32(1.0)

    def loss_fn(params):
        logits, updates = cfg.model.apply(
            {"params": params, "batch_stats": state.batch_stats}, images, train=True,
            rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
        ce_a = losses.smoothed_cross_entropy(logits, labels, cfg.num_classes, cfg.label_smoothing)
        ce_b = losses.smoothed_cross_entropy(logits, labels_b, cfg.num_classes, cfg.label_smoothing)
        loss = jnp.mean(lam * ce_a + (1.0 - lam) * ce_b)
        return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = cfg.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    def mixed(k):
        return jnp.mean(lam * losses.topk_correct(logits, labels, k)
                        + (1.0 - lam) * losses.topk_correct(logits, labels_b, k))

    metrics = {"loss": loss, "top1": mixed(1), "top5": mixed(min(5, cfg.num_classes)),
               "lr": cfg.schedule(state.step),
               # Finite iff every new parameter is: the loop never checkpoints a broken state.
               "param_norm": optax.tree.norm(params)}
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, metrics


def eval_step(cfg: StepConfig, state: TrainState, batch) -> dict:
    """Sums over the real (``mask``) examples: loss (no smoothing), top1, top5, count."""
    images = normalize(batch["frames"])
    logits = cfg.model.apply({"params": state.params, "batch_stats": state.batch_stats}, images,
                             train=False)
    labels = jnp.maximum(batch["label"], 0)  # padding carries -1
    mask = batch["mask"].astype(jnp.float32)
    ce = losses.smoothed_cross_entropy(logits, labels, cfg.num_classes, 0.0)
    return {"loss": jnp.sum(ce * mask),
            "top1": jnp.sum(losses.topk_correct(logits, labels, 1) * mask),
            "top5": jnp.sum(losses.topk_correct(logits, labels, min(5, cfg.num_classes)) * mask),
            "count": jnp.sum(mask)}


def jit_steps(cfg: StepConfig, mesh):
    """``(train_step(state, batch, rng), eval_step(state, batch))`` compiled for ``mesh``."""
    rep, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    train = jax.jit(lambda s, b, r: train_step(cfg, s, b, r), in_shardings=(rep, data, rep),
                    out_shardings=(rep, rep), donate_argnums=0)
    evaluate = jax.jit(lambda s, b: eval_step(cfg, s, b), in_shardings=(rep, data),
                       out_shardings=rep)
    return train, evaluate
