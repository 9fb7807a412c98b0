"""Losses and metrics of PP-TSN: label-smoothed cross-entropy, mixup, top-k accuracy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def smoothed_cross_entropy(logits, labels, num_classes: int, smoothing: float):
    """Per-example CE against ``(1 - eps) * one_hot + eps / K`` (Paddle's ``label_smooth``)."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def topk_correct(logits, labels, k: int):
    """Per-example 1.0 if the label is among the ``k`` highest logits (ties count against)."""
    label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    higher = jnp.sum(logits > label_logit, axis=-1)
    return (higher < k).astype(jnp.float32)


def mixup(images, labels, rng, alpha: float):
    """PaddleVideo's Mixup: one ``lam ~ Beta(alpha, alpha)`` for the batch and a permutation.

    Returns ``(mixed images, labels_b, lam)``; the loss and accuracies are
    ``lam * f(labels) + (1 - lam) * f(labels_b)``."""
    lam_rng, perm_rng = jax.random.split(rng)
    lam = jax.random.beta(lam_rng, alpha, alpha)
    perm = jax.random.permutation(perm_rng, images.shape[0])
    mixed = lam * images + (1.0 - lam) * images[perm]
    return mixed.astype(images.dtype), labels[perm], lam
