"""TSN recognizer: PaddleVideo's ``Recognizer2D`` + ``ppTSNHead`` in Flax linen.

Frames are folded into the batch for the 2D backbone; the head averages the spatially pooled
features over all T views of a clip (3 segments in training, 25 segments x 10 TenCrop views at
test time), applies dropout and one linear layer. Logits, no softmax::

    import jax, jax.numpy as jnp
    from ppsn.models import TSN

    model = TSN(depth=50, num_classes=400, dropout_rate=0.4, dtype=jnp.float32)
    x = jnp.zeros((2, 3, 224, 224, 3))              # [N, T, H, W, 3], already normalized
    variables = model.init(jax.random.key(0), x)    # {'params', 'batch_stats'}, float32
    logits = model.apply(variables, x, train=False) # [N, num_classes]

What matters for parity with PaddleVideo is in :mod:`ppsn.models.resnet_vd`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.nn import initializers

from ppsn.models.resnet_vd import ResNetVd

HEAD_INIT_STD = 0.01


class TSN(nn.Module):
    """PP-TSN.

    ``apply(variables, x, train=False)`` with ``variables = {'params', 'batch_stats'}`` and
    ``x`` float ``[N, T, H, W, 3]`` (already normalized) returns float32 logits
    ``[N, num_classes]``. ``dtype`` is the compute dtype (``jnp.bfloat16`` for mixed
    precision); parameters and batch statistics are always float32. In training pass
    ``mutable=['batch_stats']`` and a ``'dropout'`` rng.

    ``batch_axes``: the ``shard_map`` axes a training call's batch is split over (``None``: the
    call sees the whole batch). Inside such a call BatchNorm statistics are averaged over those
    devices when ``sync_bn`` (global-batch statistics), else each device's own; the dropout
    mask of a row is drawn from the rng folded with its global row index, so it does not
    depend on how many devices share the batch.
    """

    depth: int = 50
    num_classes: int = 400
    dropout_rate: float = 0.4
    dtype: Any = jnp.float32
    conv_impl: str = "auto"  # how convolutions are computed: see ppsn.models.conv
    # BatchNorm folded into the convolutions (inference only; variables from
    # ppsn.models.fold.fold_variables, without batch_stats)
    fold_bn: bool = False
    batch_axes: Any = None
    sync_bn: bool = True

    def setup(self):
        self.backbone = ResNetVd(depth=self.depth, dtype=self.dtype, conv_impl=self.conv_impl,
                                 fold_bn=self.fold_bn,
                                 bn_axis_name=self.batch_axes if self.sync_bn else None)
        self.fc = nn.Dense(
            self.num_classes,
            kernel_init=initializers.normal(HEAD_INIT_STD),
            bias_init=initializers.zeros,
            # The classifier is tiny: computing it in float32 costs nothing and keeps the
            # logits as exact as the pooled feature allows.
            dtype=jnp.float32,
            param_dtype=jnp.float32,
        )

    def features(self, x, train: bool = False):
        """Pooled clip feature ``[N, C]`` in float32: spatial mean, then mean over the T views."""
        if x.ndim != 5:
            raise ValueError(f"TSN expects input [N, T, H, W, C], got shape {x.shape}")
        n, t = x.shape[:2]
        fmap = self.backbone(x.reshape((n * t,) + x.shape[2:]), train=train)
        pooled = fmap.astype(jnp.float32).mean(axis=(1, 2))
        return pooled.reshape(n, t, -1).mean(axis=1)

    def classify(self, pooled, train: bool = False):
        """Pooled feature ``[N, C]`` -> logits: dropout (training only), then the fc layer."""
        if train and self.dropout_rate > 0:
            pooled = self.dropout(pooled)
        return self.fc(pooled).astype(jnp.float32)

    def dropout(self, pooled):
        """Inverted dropout; row ``r`` of the global batch keeps features by
        ``bernoulli(fold_in(rng, r))``."""
        n = pooled.shape[0]
        first = jax.lax.axis_index(self.batch_axes) * n if self.batch_axes else 0
        key, keep = self.make_rng("dropout"), 1.0 - self.dropout_rate
        mask = jax.vmap(lambda r: jax.random.bernoulli(jax.random.fold_in(key, r), keep,
                                                       pooled.shape[1:]))(first + jnp.arange(n))
        return jnp.where(mask, pooled / keep, 0.0).astype(pooled.dtype)

    def __call__(self, x, train: bool = False):
        return self.classify(self.features(x, train=train), train=train)


def chunked_logits(model: TSN, variables, x, views_per_chunk: int):
    """Eval-mode logits of ``x`` ``[N, V, H, W, 3]`` computed ``views_per_chunk`` views at a
    time (a ``lax.map``), then averaged: the same result as ``model.apply(variables, x)`` up to
    float summation order, with a much smaller working set (250 TenCrop views of 224 at once
    run ~1.6x slower on a CPU than in chunks of 10)."""
    import jax

    n, v = x.shape[:2]
    c = max(d for d in range(1, min(views_per_chunk, v) + 1) if v % d == 0)
    groups = x.reshape((n * v // c, 1, c) + x.shape[2:])
    pooled = jax.lax.map(lambda g: model.apply(variables, g, method=TSN.features), groups)
    pooled = pooled.reshape(n, v // c, -1).mean(axis=1)
    return model.apply(variables, pooled, method=TSN.classify)


def from_config(config, dtype=None, *, depth: int | None = None, platform: str | None = None,
                **fields) -> TSN:
    """The TSN of ``config.model`` (``depth``: another depth, a distillation teacher's) in
    ``dtype`` (default: the run's compute dtype, ``config.amp``) with the convolutions
    ``config.model.conv_impl`` resolves to on ``platform`` (default: this backend;
    :mod:`ppsn.backend`); ``fields`` set other TSN fields (``fold_bn``)."""
    from ppsn import backend

    m = config.model
    if dtype is None:
        dtype = backend.compute_dtype(config.amp)
    return TSN(depth=m.depth if depth is None else depth, num_classes=m.num_classes,
               dropout_rate=m.dropout_rate, dtype=dtype,
               conv_impl=backend.conv_impl(m.conv_impl, platform),
               sync_bn=m.get("sync_bn", True), **fields)


def variable_shapes(depth: int, num_classes: int) -> dict[tuple[str, ...], tuple[int, ...]]:
    """``{('params', 'backbone', ..., 'kernel'): shape}`` of a ResNet-``depth``-vd TSN's
    variables (nothing is computed)."""
    model = TSN(depth=depth, num_classes=num_classes)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                 jnp.zeros((1, 1, 32, 32, 3), jnp.float32)))
    return {tuple(p.key for p in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]}
