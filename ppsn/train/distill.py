"""Knowledge distillation: a frozen teacher (``kd``) or two models learning from each other (``dml``).

Config section ``distill`` (see :func:`ppsn.recipe.pptsn_config`):

* ``mode``: ``''`` (off), ``'kd'`` or ``'dml'``;
* ``teacher_depth``, ``teacher_checkpoint``: the teacher TSN and where its variables come from, a
  ppsn variables checkpoint (a run's ``best/``) or a PaddleVideo file converted with
  ``python -m ppsn.convert.paddle``;
* ``temperature`` (T) and ``weight`` (w).

``kd`` (Hinton et al.): the teacher's variables are read once, replicated over the mesh like the
student's, and given to the jitted train step as a separate, non-donated argument, so they are
never in the optimizer state and receive no gradient. The teacher runs in eval mode (running BN
statistics, no dropout) on the student's normalized, mixed-up input. Loss per example::

    CE_smoothed(student) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))

``dml`` (PaddleVideo's DML, as in PP-TSMv2's distillation configs): both models train, each with
its own CE, plus ``w * T^2 * (KL(p_s || p_t) + KL(p_t || p_s)) / 2`` (PaddleClas's ``DMLLoss``,
symmetric). The train state's params and batch statistics are ``{'student': ..., 'teacher': ...}``
so train checkpoints keep both; the best model, test mode and export use the student.
"""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp

from ppsn import checkpoint

log = logging.getLogger(__name__)

MODES = ("", "kd", "dml")
STUDENT, TEACHER = "student", "teacher"


def check_config(distill) -> str:
    """Validates the ``distill`` section; returns the mode."""
    mode = distill.mode
    if mode not in MODES:
        raise ValueError(f"--config.distill.mode must be one of 'kd', 'dml' or '' (off), got {mode!r}")
    if mode == "kd" and not distill.teacher_checkpoint:
        raise ValueError("--config.distill.mode=kd needs --config.distill.teacher_checkpoint (a ppsn "
                         "checkpoint such as a run's best/, or a converted PaddleVideo model)")
    if mode and distill.temperature <= 0:
        raise ValueError(f"--config.distill.temperature must be > 0, got {distill.temperature}")
    return mode


def teacher_model(config, dtype):
    from ppsn.models import TSN

    return TSN(depth=config.distill.teacher_depth, num_classes=config.model.num_classes,
               dropout_rate=config.model.dropout_rate, dtype=dtype)


def load_teacher_variables(config, teacher) -> dict:
    """The teacher's variables from ``distill.teacher_checkpoint``, checked against its model
    (depth and class count must match; a mismatch names both)."""
    from ppsn.train import initialize

    path = config.distill.teacher_checkpoint
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"--config.distill.teacher_checkpoint={path} does not exist. Use a ppsn run's best/ "
            f"directory or convert a PaddleVideo model with: python -m ppsn.convert.paddle "
            f"--pdparams FILE --depth {config.distill.teacher_depth} --output {path}")
    loaded, meta = checkpoint.load_variables(path)
    if "depth" in meta and int(meta["depth"]) != teacher.depth:
        raise ValueError(f"{path} holds a ResNet{meta['depth']}-vd but "
                         f"--config.distill.teacher_depth={teacher.depth}")
    head = loaded.get("params", {}).get("fc", {}).get("bias")
    if head is None or head.shape[0] != teacher.num_classes:
        got = "no classifier" if head is None else f"{head.shape[0]} classes"
        raise ValueError(f"the teacher {path} has {got}; the student has {teacher.num_classes}: "
                         "a kd teacher must be a full model of the same classes")
    fresh = initialize.scratch_variables(teacher, 0)
    return initialize.merge_loaded(fresh, loaded, path)


def kl_divergence(p_logits, q_logits, temperature: float):
    """Per-example ``KL(softmax(p / T) || softmax(q / T))`` in float32."""
    p_log = jax.nn.log_softmax(p_logits.astype(jnp.float32) / temperature, axis=-1)
    q_log = jax.nn.log_softmax(q_logits.astype(jnp.float32) / temperature, axis=-1)
    return jnp.sum(jnp.exp(p_log) * (p_log - q_log), axis=-1)


def kd_loss(student_logits, teacher_logits, temperature: float):
    """Per-example ``T^2 KL(teacher || student)``; no gradient reaches the teacher."""
    teacher_logits = jax.lax.stop_gradient(teacher_logits)
    return temperature ** 2 * kl_divergence(teacher_logits, student_logits, temperature)


def dml_loss(a_logits, b_logits, temperature: float):
    """Per-example symmetric ``T^2 (KL(a || b) + KL(b || a)) / 2``: gradients reach both."""
    return temperature ** 2 * 0.5 * (kl_divergence(a_logits, b_logits, temperature)
                                     + kl_divergence(b_logits, a_logits, temperature))


def student_variables(params, batch_stats) -> dict:
    """``{'params', 'batch_stats'}`` of the student, for a plain or a DML train state."""
    if isinstance(params, dict) and STUDENT in params and TEACHER in params:
        return {"params": params[STUDENT], "batch_stats": batch_stats[STUDENT]}
    return {"params": params, "batch_stats": batch_stats}


def pair(student, teacher) -> dict:
    return {STUDENT: student, TEACHER: teacher}


def pair_variables(student: dict, teacher: dict) -> dict:
    """The DML state's variables: ``{'params': pair, 'batch_stats': pair}``."""
    return {k: pair(student[k], teacher[k]) for k in ("params", "batch_stats")}
