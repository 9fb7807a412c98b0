"""2D convolution for the ResNet-vd backbone, NHWC / HWIO, symmetric ``(k - 1) // 2`` padding.

XLA's CPU convolution is fast for most shapes but collapses on some: a 3x3 convolution over a
2x2 feature map (the last stage of a 64-pixel input) runs at ~3 GFLOP/s instead of ~300. The
same product written as patches x kernel matrix multiplication ("im2col") avoids that and is
as fast or faster whenever the feature map is small. On GPUs and TPUs the opposite holds:
cuDNN and the TPU's convolutions are the fast path, and im2col's patch tensors (9x the input
of a 3x3 convolution, kept for the backward pass) cost memory and bandwidth.

``impl``: ``matmul`` (1x1 convolutions as matrix products, im2col for small maps, XLA's
convolution otherwise: the CPU choice), ``im2col`` (every k > 1 convolution), ``xla`` (XLA's
convolution everywhere), or ``auto``: ``matmul`` on CPU, ``xla`` on GPU and TPU
(:func:`ppsn.backend.conv_impl`, the one place that decides). All compute the same
convolution (up to float summation order).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ppsn import backend

# 'matmul' uses im2col for k > 1 when the output map has at most this many pixels (28x28 and
# smaller; measured on a 2-core AVX-512 CPU: R50 forward at 224, 40 -> 36 ms per image).
IM2COL_MAX_PIXELS = 1000


def _im2col(x, kernel, stride: int, pad: int):
    n, h, w, c = x.shape
    k = kernel.shape[0]
    out_h = (h + 2 * pad - k) // stride + 1
    out_w = (w + 2 * pad - k) // stride + 1
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else x
    patches = [xp[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride, :]
               for i in range(k) for j in range(k)]
    cols = jnp.concatenate(patches, axis=-1) if len(patches) > 1 else patches[0]
    out = jnp.dot(cols.reshape(-1, k * k * c), kernel.reshape(k * k * c, -1))
    return out.reshape(n, out_h, out_w, -1)


def conv2d(x, kernel, stride: int = 1, impl: str = "auto"):
    """``x`` [N, H, W, C] conv ``kernel`` [k, k, C, F], stride ``stride``, padding (k-1)//2."""
    impl = backend.conv_impl(impl)
    k = kernel.shape[0]
    pad = (k - 1) // 2
    if impl != "xla" and k == 1 and stride == 1:
        n, h, w, c = x.shape
        return jnp.dot(x.reshape(-1, c), kernel.reshape(c, -1)).reshape(n, h, w, -1)
    if impl == "matmul":
        out_pixels = ((x.shape[1] + 2 * pad - k) // stride + 1) * ((x.shape[2] + 2 * pad - k) // stride + 1)
        impl = "im2col" if out_pixels <= IM2COL_MAX_PIXELS else "xla"
    if impl == "im2col":
        return _im2col(x, kernel, stride, pad)
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
