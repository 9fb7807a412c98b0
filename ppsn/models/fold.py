"""BatchNorm folded into the convolution before it, for inference (numpy only).

In eval mode ``BN(conv(x, W))`` is ``conv(x, W') + b'`` with ``W' = W * g / sqrt(v + eps)``
(per output channel) and ``b' = beta - m * g / sqrt(v + eps)``, computed in float64 and stored
as float32. Used by the ONNX graph (:mod:`ppsn.serve.onnx_graph`) and the ``jax.export`` model
(:mod:`ppsn.export`, a TSN built with ``fold_bn=True``), so both fold the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ppsn.models import plan


def fold_conv_bn(kernel, bn_params, bn_stats, epsilon: float = plan.BN_EPSILON):
    """``(kernel [k, k, in, out], bias [out])``, float32, of a conv (HWIO ``kernel``) followed
    by an eval-mode BatchNorm (``bn_params``: ``scale``, ``bias``; ``bn_stats``: ``mean``,
    ``var``)."""
    scale = (np.asarray(bn_params["scale"], np.float64)
             / np.sqrt(np.asarray(bn_stats["var"], np.float64) + epsilon))
    mean = np.asarray(bn_stats["mean"], np.float64)
    bias = np.asarray(bn_params["bias"], np.float64) - mean * scale
    folded = np.asarray(kernel, np.float64) * scale
    return folded.astype(np.float32), bias.astype(np.float32)


def _fold_tree(params, stats):
    if "conv" in params and "bn" in params:  # a ConvBN unit
        kernel, bias = fold_conv_bn(params["conv"]["kernel"], params["bn"], stats["bn"])
        return {"conv": {"kernel": kernel}, "bias": bias}
    return {k: _fold_tree(v, stats.get(k, {})) if isinstance(v, Mapping) else np.asarray(v)
            for k, v in params.items()}


def fold_variables(variables) -> dict:
    """The variables of a TSN (``{'params', 'batch_stats'}``) as those of the same TSN built
    with ``fold_bn=True``: ``{'params'}`` only, each conv-BN unit's ``{'conv': {'kernel'},
    'bn'}`` replaced by ``{'conv': {'kernel'}, 'bias'}``."""
    return {"params": _fold_tree(variables["params"], variables["batch_stats"])}
