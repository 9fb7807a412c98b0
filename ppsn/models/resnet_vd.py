"""ResNet-vd backbone (PaddleVideo's ``ResNetTweaksTSN``) in Flax linen, NHWC.

The module names mirror PaddleVideo's structured parameter names so that checkpoint
conversion is a rename: ``conv1_1``, ``conv1_2``, ``conv1_3`` (deep stem), then blocks
``bb_{stage}_{index}`` holding ``conv0``, ``conv1`` (, ``conv2``) and, in the first block of a
stage, ``short``. Every conv-BN unit holds ``conv`` (no bias) and ``bn``.

The topology (stem, stages, strides, shortcuts) is :mod:`ppsn.models.plan`'s, shared with the
ONNX builder. Numerics follow PaddleVideo exactly (see ``shared/docs/RECIPE.md``):

* padding is ``(k - 1) // 2`` on both sides, never XLA's "SAME" (which pads 0 before / 1 after
  for stride-2 convs on even sizes);
* BatchNorm epsilon 1e-5, momentum 0.9 (``running = 0.9 * running + 0.1 * batch``);
* the "D" shortcut of stages 2-4 is a 2x2 stride-2 average pool in ceil mode, exclusive of the
  padding (windows cut by the border are divided by their own size), then a 1x1 conv-BN;
* the very first block's shortcut is a plain 1x1 conv-BN, stride 1, even for ResNet-18/34 where
  its input and output widths are equal.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax.nn import initializers

from ppsn.models import plan
from ppsn.models.conv import conv2d

# Paddle's KaimingNormal: plain (untruncated) normal with std sqrt(2 / fan_in).
kaiming_normal = initializers.variance_scaling(2.0, "fan_in", "normal")


def avg_pool_2x2_ceil_exclusive(x: jnp.ndarray) -> jnp.ndarray:
    """2x2 average pool, stride 2, ceil mode, exclusive of padding (Paddle's defaults).

    An odd height or width gets one extra output row/column whose windows hold fewer than 4
    values; they are divided by the number of real values (:func:`plan.pool_window_counts`).
    """
    _, h, w, _ = x.shape
    counts = plan.pool_window_counts(h, w)
    if counts is not None:
        x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    n, hp, wp, c = x.shape
    summed = x.reshape(n, hp // 2, 2, wp // 2, 2, c).sum(axis=(2, 4))
    if counts is None:
        return summed * jnp.asarray(0.25, x.dtype)
    return summed * jnp.asarray((1.0 / counts)[None, :, :, None], x.dtype)


class Conv(nn.Module):
    """Bias-free k x k convolution, symmetric (k-1)//2 padding; float32 ``kernel`` [k, k, C, F]
    cast to ``dtype`` for the computation (see :mod:`ppsn.models.conv` for ``impl``)."""

    features: int
    kernel_size: int
    strides: int = 1
    dtype: Any = jnp.float32
    impl: str = "auto"

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param("kernel", kaiming_normal, (k, k, x.shape[-1], self.features),
                            jnp.float32)
        return conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.strides, self.impl)


class ConvBN(nn.Module):
    """Conv (no bias, symmetric (k-1)//2 padding) then BatchNorm, optionally ReLU.

    ``fold_bn``: inference only, the BatchNorm folded into the convolution
    (:func:`ppsn.models.fold.fold_variables`): the conv then a float32 ``bias``.
    ``bn_axis_name``: the mapped axes whose devices share training statistics (None: each
    call's own batch)."""

    features: int
    kernel_size: int
    strides: int = 1
    relu: bool = True
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    fold_bn: bool = False
    bn_axis_name: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        x = Conv(self.features, self.kernel_size, self.strides, self.dtype, self.conv_impl,
                 name="conv")(x)
        if self.fold_bn:
            if train:
                raise ValueError("a model with fold_bn=True is for inference only")
            bias = self.param("bias", initializers.zeros, (self.features,), jnp.float32)
            x = x + bias.astype(self.dtype)
            return nn.relu(x) if self.relu else x
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=plan.BN_MOMENTUM,
            epsilon=plan.BN_EPSILON,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            axis_name=self.bn_axis_name,
            name="bn",
        )(x)
        return nn.relu(x) if self.relu else x


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (carries the stride) -> 1x1 (x4), ReLU after the residual add."""

    width: int
    strides: int
    projection: bool
    pooled_projection: bool
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    fold_bn: bool = False
    bn_axis_name: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        conv_bn = functools.partial(ConvBN, dtype=self.dtype, conv_impl=self.conv_impl,
                                    fold_bn=self.fold_bn, bn_axis_name=self.bn_axis_name)
        y = conv_bn(self.width, 1, name="conv0")(x, train)
        y = conv_bn(self.width, 3, strides=self.strides, name="conv1")(y, train)
        y = conv_bn(self.width * 4, 1, relu=False, name="conv2")(y, train)
        short = _shortcut(x, self.width * 4, self.projection, self.pooled_projection,
                          conv_bn, train)
        return nn.relu(short + y)


class BasicBlock(nn.Module):
    """3x3 (carries the stride) -> 3x3, ReLU after the residual add (ResNet-18/34)."""

    width: int
    strides: int
    projection: bool
    pooled_projection: bool
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    fold_bn: bool = False
    bn_axis_name: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        conv_bn = functools.partial(ConvBN, dtype=self.dtype, conv_impl=self.conv_impl,
                                    fold_bn=self.fold_bn, bn_axis_name=self.bn_axis_name)
        y = conv_bn(self.width, 3, strides=self.strides, name="conv0")(x, train)
        y = conv_bn(self.width, 3, relu=False, name="conv1")(y, train)
        short = _shortcut(x, self.width, self.projection, self.pooled_projection,
                          conv_bn, train)
        return nn.relu(short + y)


def _shortcut(x, features, projection, pooled_projection, conv_bn, train):
    """Identity, or the projection shortcut (with the "D" average pool when pooled)."""
    if not projection:
        return x
    if pooled_projection:
        x = avg_pool_2x2_ceil_exclusive(x)
    # Called from inside a compact module: the submodule is registered on the caller.
    return conv_bn(features, 1, relu=False, name="short")(x, train)


class ResNetVd(nn.Module):
    """ResNet-vd backbone without pooling or classifier.

    Input ``[B, H, W, 3]`` (normalized floats), output the last stage's feature map
    ``[B, ceil(H/32), ceil(W/32), feature_dim(depth)]`` in ``dtype``.
    """

    depth: int = 50
    dtype: Any = jnp.float32
    conv_impl: str = "auto"  # see ppsn.models.conv
    fold_bn: bool = False  # BatchNorm folded into the convolutions (inference only)
    bn_axis_name: Any = None  # see ConvBN

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.astype(self.dtype)
        conv_bn = functools.partial(ConvBN, dtype=self.dtype, conv_impl=self.conv_impl,
                                    fold_bn=self.fold_bn, bn_axis_name=self.bn_axis_name)
        for name, features, stride in plan.STEM:
            x = conv_bn(features, 3, strides=stride, name=name)(x, train)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        block_cls = BottleneckBlock if plan.uses_bottleneck(self.depth) else BasicBlock
        for block in plan.blocks(self.depth):
            x = block_cls(width=block.width, strides=block.stride, projection=block.projection,
                          pooled_projection=block.pooled_projection, dtype=self.dtype,
                          conv_impl=self.conv_impl, fold_bn=self.fold_bn,
                          bn_axis_name=self.bn_axis_name,
                          name=block.name)(x, train)
        return x
