"""Losses and metrics of PP-TSN: label-smoothed cross-entropy, mixup, top-k accuracy, and the
distillation losses (Hinton's kd, DML's symmetric KL)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


def smoothed_cross_entropy(logits, labels, num_classes: int, smoothing: float):
    """Per-example CE against ``(1 - eps) * one_hot + eps / K`` (Paddle's ``label_smooth``)."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def topk_correct(logits, labels, k: int):
    """Per-example 1.0 if the label is among the ``k`` highest logits, ties counting against it.

    Correct iff fewer than ``k`` *other* classes have a logit >= the label's (a NaN logit of
    the label or of another class counts against it), so all-equal logits are never top-1
    correct when there is more than one class. :func:`topk_correct_numpy` is the same rule."""
    label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    at_least = jnp.sum(~(logits < label_logit), axis=-1) - 1  # minus the label itself
    return (at_least < k).astype(jnp.float32)


def topk_correct_numpy(scores, labels, k: int):
    """:func:`topk_correct` in NumPy for host-side metrics (test mode): a bool per example."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    label_score = np.take_along_axis(scores, labels[:, None], axis=-1)
    return np.sum(~(scores < label_score), axis=-1) - 1 < k


class Targets(NamedTuple):
    """Mixed-up targets: every loss and accuracy is ``lam * f(labels) + (1 - lam) * f(labels_b)``."""

    labels: jax.Array
    labels_b: jax.Array
    lam: jax.Array

    @classmethod
    def unmixed(cls, labels):
        return cls(labels, labels, jnp.float32(1.0))

    def mix(self, f):
        """``lam * f(labels) + (1 - lam) * f(labels_b)`` for a per-example function ``f``."""
        return self.lam * f(self.labels) + (1.0 - self.lam) * f(self.labels_b)


def mixup(images, labels, rng, alpha: float, lam=None):
    """PaddleVideo's Mixup of a batch: one ``lam ~ Beta(alpha, alpha)`` (unless ``lam`` is
    given) and a permutation of the batch.

    Returns ``(mixed images, labels_b, lam)``; the loss and accuracies are
    ``lam * f(labels) + (1 - lam) * f(labels_b)``. The train step applies it to each device's
    shard with one ``lam`` for the global batch (:func:`ppsn.train.steps.mixup_per_shard`)."""
    lam_rng, perm_rng = jax.random.split(rng)
    if lam is None:
        lam = jax.random.beta(lam_rng, alpha, alpha)
    perm = jax.random.permutation(perm_rng, images.shape[0])
    mixed = lam * images + (1.0 - lam) * images[perm]
    return mixed.astype(images.dtype), labels[perm], lam


def mixed_cross_entropy(logits, targets: Targets, num_classes: int, smoothing: float):
    """Per-example label-smoothed CE on mixed-up targets."""
    return targets.mix(lambda y: smoothed_cross_entropy(logits, y, num_classes, smoothing))


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


def loss_problems(loss_cfg) -> list[str]:
    """Every problem of the ``loss`` section's values."""
    from ppsn.checks import Problems, finite

    problems = Problems()
    problems.need(finite(loss_cfg.label_smoothing) and 0 <= loss_cfg.label_smoothing < 1,
                  f"--config.loss.label_smoothing={loss_cfg.label_smoothing!r}: must be in [0, 1)")
    problems.need(finite(loss_cfg.mixup_alpha) and loss_cfg.mixup_alpha >= 0,
                  f"--config.loss.mixup_alpha={loss_cfg.mixup_alpha!r}: must be finite and >= 0")
    return problems
