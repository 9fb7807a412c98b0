"""Choices that depend on the backend (CPU, GPU, TPU), made here and nowhere else.

Each takes the config's value; ``'auto'`` (or ``None``) is resolved from ``jax.default_backend()``
(or the ``platform`` given), anything else forces the choice on every backend:

* :func:`conv_impl` (``config.model.conv_impl``): on CPU ``'matmul'`` (1x1 convolutions as matrix
  products, im2col for small maps: XLA's CPU convolution is slow for those shapes); on GPU and
  TPU ``'xla'`` (cuDNN / the TPU's native convolutions; im2col would materialize 9x patch
  tensors and keep them for the backward pass). See :mod:`ppsn.models.conv`.
* :func:`compute_dtype` (``config.amp``): bf16 on GPU and TPU, float32 on CPU; ``True`` /
  ``False`` (or the strings a command line gives, ``--config.amp=True``) force it.
* :func:`views_per_call` (``config.data.test_views_per_chunk``): how many TenCrop views of a
  video the test runs per model call: 10 at a time on CPU (a small working set is faster
  there); on GPU and TPU all views of all the videos of the per-device batch in one call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ppsn.cli import ConfigError

ACCELERATORS = ("gpu", "tpu")
CONV_IMPLS = ("auto", "matmul", "im2col", "xla")
CPU_VIEWS_PER_CALL = 10  # measured on 2 CPU cores: 250 R50 views at once run ~1.6x slower


def platform(platform: str | None = None) -> str:
    """``'cpu'``, ``'gpu'`` or ``'tpu'``: the given one, else JAX's default backend."""
    return platform or jax.default_backend()


def on_accelerator(platform_name: str | None = None) -> bool:
    return platform(platform_name) in ACCELERATORS


def conv_impl(value: str = "auto", platform_name: str | None = None) -> str:
    """The convolution implementation ``'auto'`` stands for here (others are returned as is)."""
    if value not in CONV_IMPLS:
        raise ConfigError(f"--config.model.conv_impl={value!r}: one of {', '.join(CONV_IMPLS)}")
    if value != "auto":
        return value
    return "xla" if on_accelerator(platform_name) else "matmul"


def compute_dtype(amp="auto", platform_name: str | None = None):
    """bf16 or float32 for ``amp``: ``'auto'``, or ``True`` / ``False`` (bools or strings)."""
    text = str(amp).strip().lower()
    if text == "auto":
        return jnp.bfloat16 if on_accelerator(platform_name) else jnp.float32
    if text in ("true", "1", "bf16"):
        return jnp.bfloat16
    if text in ("false", "0", "fp32", "float32"):
        return jnp.float32
    raise ConfigError(f"--config.amp={amp!r}: 'auto', True or False")


def views_per_call(value: int | None = None, platform_name: str | None = None) -> int:
    """Views of a video per model call in the test (0: all views of the batch at once)."""
    if value is None or value < 0:
        return 0 if on_accelerator(platform_name) else CPU_VIEWS_PER_CALL
    return int(value)
