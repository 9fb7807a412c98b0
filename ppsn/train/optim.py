"""PaddleVideo's PP-TSN optimizer as an optax chain.

* Learning rate per iteration from fractional epochs ``e = step / steps_per_epoch``, exactly
  PaddleVideo's ``CustomWarmupCosineDecay``: cosine ``lr(e) = base * (cos(pi e / E) + 1) / 2``;
  during the first ``warmup_epochs`` a straight line from ``warmup_start_lr`` to
  ``lr(warmup_epochs)``.
* Coupled L2 ("weight decay" added to the gradient, like Paddle's ``L2Decay``) on conv weights and
  the fc weight; none on BatchNorm scale/bias and the fc bias.
* Momentum 0.9 with Nesterov, Paddle's form: ``v = mu v + g``; ``p -= lr * (g + mu v)``.
* Per-parameter learning-rate multipliers: fc weight x5, fc bias x10, backbone x1.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax


def warmup_cosine_lr(epoch, *, base_lr, num_epochs, warmup_epochs, warmup_start_lr):
    """LR at fractional ``epoch``: Python numbers in, a Python float out; any jax array among
    the arguments (the epoch, or the schedule's values as the train step receives them), a
    jax array."""
    if not any(isinstance(v, jax.Array) for v in (epoch, base_lr, num_epochs, warmup_epochs,
                                                     warmup_start_lr)):
        def cosine(e):
            return base_lr * (math.cos(math.pi * e / num_epochs) + 1.0) * 0.5

        if warmup_epochs <= 0 or epoch >= warmup_epochs:
            return cosine(epoch)
        return warmup_start_lr + epoch * (cosine(warmup_epochs) - warmup_start_lr) / warmup_epochs

    def cosine(e):
        return base_lr * (jnp.cos(math.pi * e / num_epochs) + 1.0) * 0.5

    warmup = jnp.where(warmup_epochs > 0, warmup_epochs, 1.0)  # no warm-up: the line is unused
    warm = warmup_start_lr + epoch * (cosine(warmup_epochs) - warmup_start_lr) / warmup
    return jnp.where(epoch < warmup_epochs, warm, cosine(epoch))


SCHEDULE_FIELDS = ("base_lr", "warmup_start_lr", "warmup_epochs", "num_epochs", "steps_per_epoch")


def schedule_values(optim_cfg, num_epochs: float, steps_per_epoch: int) -> dict:
    """The numbers the schedule is made of, float32 scalars: the train step receives them as
    an argument, so its compiled program does not depend on them (a run of another length or
    learning rate, same shapes, loads it from the persistent compilation cache)."""
    values = dict(base_lr=optim_cfg.base_lr, warmup_start_lr=optim_cfg.warmup_start_lr,
                  warmup_epochs=optim_cfg.warmup_epochs, num_epochs=num_epochs,
                  steps_per_epoch=steps_per_epoch)
    return {k: np.float32(values[k]) for k in SCHEDULE_FIELDS}


def schedule_from(values: dict):
    """optax schedule: step -> LR, through fractional epochs, from :func:`schedule_values`
    (numbers or, inside the train step, its traced arguments)."""

    def schedule(step):
        epoch = jnp.asarray(step, jnp.float32) / values["steps_per_epoch"]
        return warmup_cosine_lr(epoch, base_lr=values["base_lr"],
                                num_epochs=values["num_epochs"],
                                warmup_epochs=values["warmup_epochs"],
                                warmup_start_lr=values["warmup_start_lr"])

    return schedule


def make_schedule(optim_cfg, num_epochs: float, steps_per_epoch: int):
    """optax schedule: step -> LR, through fractional epochs."""
    return schedule_from(schedule_values(optim_cfg, num_epochs, steps_per_epoch))


def _path_names(path) -> tuple[str, ...]:
    return tuple(getattr(p, "key", str(p)) for p in path)


def weight_decay_mask(params):
    """True where L2 applies: conv kernels and the fc kernel; not BN scale/bias, not fc bias."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: _path_names(path)[-1] == "kernel", params)


def lr_multipliers(params, fc_weight: float, fc_bias: float):
    """Per-parameter LR multipliers: fc kernel ``fc_weight``, fc bias ``fc_bias``, others 1
    (also for a DML pair ``{'student': ..., 'teacher': ...}``: each model's ``fc``)."""

    def mult(path, _):
        names = _path_names(path)
        if len(names) >= 2 and names[-2] == "fc":
            return fc_weight if names[-1] == "kernel" else fc_bias
        return 1.0

    return jax.tree_util.tree_map_with_path(mult, params)


def scale_by_tree(multipliers) -> optax.GradientTransformation:
    """Multiply each update by a constant of the same tree structure."""

    def init(_):
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, m: u * jnp.asarray(m, u.dtype), updates, multipliers), state

    return optax.GradientTransformation(init, update)


def make_optimizer(optim_cfg, params, num_epochs: float | None = None,
                   steps_per_epoch: int | None = None, schedule=None
                   ) -> optax.GradientTransformation:
    """The full chain; ``params`` gives the tree structure for masks and multipliers; the LR
    ``schedule`` (else ``make_schedule`` of ``num_epochs`` and ``steps_per_epoch``)."""
    if schedule is None:
        if num_epochs is None or steps_per_epoch is None:
            raise TypeError("make_optimizer: give a schedule, or num_epochs and steps_per_epoch")
        schedule = make_schedule(optim_cfg, num_epochs, steps_per_epoch)
    return optax.chain(
        optax.add_decayed_weights(optim_cfg.weight_decay, mask=weight_decay_mask(params)),
        optax.trace(decay=optim_cfg.momentum, nesterov=optim_cfg.nesterov),
        scale_by_tree(lr_multipliers(params, optim_cfg.fc_weight_lr_mult, optim_cfg.fc_bias_lr_mult)),
        optax.scale_by_learning_rate(schedule),
    )


def schedule_problems(config) -> list[str]:
    """Every problem of the schedule's and the optimizer's config values (``num_epochs``,
    ``optim.*``)."""
    from ppsn.checks import Problems, finite

    problems, o = Problems(), config.optim
    need = problems.need
    need(isinstance(config.num_epochs, int) and config.num_epochs >= 1,
         f"--config.num_epochs={config.num_epochs!r}: must be an integer >= 1")
    need(finite(o.base_lr) and o.base_lr > 0,
         f"--config.optim.base_lr={o.base_lr!r}: the learning rate must be finite and > 0")
    need(finite(o.warmup_start_lr) and o.warmup_start_lr >= 0,
         f"--config.optim.warmup_start_lr={o.warmup_start_lr!r}: must be finite and >= 0")
    need(finite(o.warmup_epochs) and o.warmup_epochs >= 0,
         f"--config.optim.warmup_epochs={o.warmup_epochs!r}: must be finite and >= 0")
    need(finite(o.momentum) and 0 <= o.momentum < 1,
         f"--config.optim.momentum={o.momentum!r}: must be in [0, 1)")
    for field in ("weight_decay", "fc_weight_lr_mult", "fc_bias_lr_mult"):
        need(finite(o[field]) and o[field] >= 0,
             f"--config.optim.{field}={o[field]!r}: must be finite and >= 0")
    return problems
