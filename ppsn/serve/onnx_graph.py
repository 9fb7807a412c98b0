"""The eval graph of a TSN as an ONNX model, built directly from its variables.

The graph is written with ``onnx.helper`` (no tracing): each conv-BN unit becomes one ``Conv``
with the BatchNorm folded in (:func:`ppsn.models.fold.fold_conv_bn`, shared with the
``jax.export`` model), ReLU,
the stem's max pool, the ResNet-vd "D" shortcut pool (2x2, ceil mode, exclusive of padding: an
``AveragePool`` times a constant map of 4 / window size, exactly the Flax model's arithmetic), the
spatial mean, the mean over the views of a clip, the fc layer and the softmax.

Inputs (``n`` symbolic, and ``views`` too unless ``build`` is given a number):

* ``input_kind='uint8'``: ``frames`` uint8 ``[n, views, H, W, 3]`` (what ``ppsn.predict`` feeds:
  TenCrop views of the scaled frames), normalized in the graph with ImageNet mean/std;
* ``input_kind='normalized'``: ``frames`` float32 ``[n, views, H, W, 3]``, already normalized.

A symbolic ``views`` lets int8 calibration feed a clip a few views at a time (the memory NNCF's
statistics take grows with the views run at once) while predict feeds all of them: the mean over
a clip's views reshapes by ``clip_shape`` (``[n, views]``, taken from ``frames``).

Outputs: ``logits`` float32 ``[n, classes]`` and ``scores`` (their softmax). The stem's output
tensor is named ``stem`` so that a runtime can run the stem and the rest at different
precisions (:func:`split_at_stem`: the rest takes ``stem`` and ``clip_shape``).
"""

from __future__ import annotations

import numpy as np

from ppsn.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ppsn.models import fold, plan

OPSET = 17
INPUT_KINDS = ("uint8", "normalized")
STEM = "stem"  # the stem's output (after the max pool): where mixed precision splits the graph
CLIP_SHAPE = "clip_shape"  # int64 [n, views] of ``frames``: the head's mean over views needs it


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs the 'onnx' package: pip install -e '.[serve]'") from None
    return onnx


class _Graph:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self, onnx):
        self.onnx, self.helper = onnx, onnx.helper
        self.nodes, self.initializers, self._count = [], [], 0

    def name(self, prefix):
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, prefix, array):
        name = self.name(prefix)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type, inputs, prefix=None, output=None, **attrs):
        out = output or self.name(prefix or op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out


def _conv_bn(g, x, params, stats, relu, stride=1):
    kernel, bias = fold.fold_conv_bn(params["conv"]["kernel"], params["bn"], stats["bn"])
    k = kernel.shape[0]
    weight = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))  # HWIO -> [out, in, k, k]
    pad = (k - 1) // 2
    y = g.op("Conv", [x, g.const("w", weight), g.const("b", bias)],
             kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
    return g.op("Relu", [y]) if relu else y


def _avg_pool_2x2_ceil_exclusive(g, x, h, w):
    """Returns the pooled tensor and its spatial size (the Flax model's
    ``avg_pool_2x2_ceil_exclusive``: window sums divided by :func:`plan.pool_window_counts`)."""
    ph, pw = h % 2, w % 2
    y = g.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, ph, pw],
             count_include_pad=1)  # = window sum / 4, padded values being 0
    counts = plan.pool_window_counts(h, w)
    if counts is not None:
        y = g.op("Mul", [y, g.const("count", (4.0 / counts).astype(np.float32)[None, None])])
    return y, (h + ph) // 2, (w + pw) // 2


def _conv_out(size, stride):
    return (size - 1) // stride + 1  # k = 3, pad 1 or k = 1, pad 0


def _normalized_input(g, onnx, input_kind, height, width, mean, std):
    """``frames`` as float32 NCHW ``[n * views, 3, H, W]``, normalized (uint8 input)."""
    x = g.op("Reshape", ["frames", g.const("shape", np.array([-1, height, width, 3], np.int64))])
    x = g.op("Transpose", [x], perm=[0, 3, 1, 2])  # NHWC -> NCHW
    if input_kind == "uint8":
        x = g.op("Cast", [x], to=onnx.TensorProto.FLOAT)
        inv = (1.0 / (255.0 * np.asarray(std, np.float64))).astype(np.float32).reshape(1, 3, 1, 1)
        shift = (-np.asarray(mean, np.float64) / np.asarray(std, np.float64)).astype(np.float32)
        x = g.op("Add", [g.op("Mul", [x, g.const("inv_std", inv)]),
                         g.const("shift", shift.reshape(1, 3, 1, 1))])
    return x


def _backbone(g, x, params, stats, depth: int, height: int, width: int):
    """The ResNet-vd backbone: the stem (its output named ``STEM``) and the residual blocks."""
    h, w = height, width
    for name, _, stride in plan.STEM:
        x = _conv_bn(g, x, params[name], stats[name], True, stride=stride)
        h, w = _conv_out(h, stride), _conv_out(w, stride)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], output=STEM)
    h, w = _conv_out(h, 2), _conv_out(w, 2)

    bottleneck = plan.uses_bottleneck(depth)
    for block in plan.blocks(depth):
        p, s = params[block.name], stats[block.name]
        if bottleneck:
            y = _conv_bn(g, x, p["conv0"], s["conv0"], True)
            y = _conv_bn(g, y, p["conv1"], s["conv1"], True, stride=block.stride)
            y = _conv_bn(g, y, p["conv2"], s["conv2"], False)
        else:
            y = _conv_bn(g, x, p["conv0"], s["conv0"], True, stride=block.stride)
            y = _conv_bn(g, y, p["conv1"], s["conv1"], False)
        short = x
        if block.pooled_projection:
            short, _, _ = _avg_pool_2x2_ceil_exclusive(g, short, h, w)
        if block.projection:
            short = _conv_bn(g, short, p["short"], s["short"], False)
        h, w = _conv_out(h, block.stride), _conv_out(w, block.stride)
        x = g.op("Relu", [g.op("Add", [short, y])])
    return x


def _head(g, onnx, x, head) -> int:
    """Spatial mean, mean over a clip's views, fc and softmax (``logits``, ``scores``); returns
    the number of classes."""
    pooled = g.op("ReduceMean", [x], axes=[2, 3], keepdims=0)  # [n * views, C]
    channels = np.asarray(head["kernel"]).shape[0]
    shape = g.op("Concat", [CLIP_SHAPE, g.const("channels", np.array([channels], np.int64))],
                 axis=0)
    pooled = g.op("Reshape", [pooled, shape])  # [n, views, C]
    pooled = g.op("ReduceMean", [pooled], axes=[1], keepdims=0)  # [n, C]
    kernel = np.asarray(head["kernel"], np.float32)
    logits = g.op("Gemm", [pooled, g.const("fc_w", kernel),
                           g.const("fc_b", np.asarray(head["bias"], np.float32))])
    g.nodes.append(onnx.helper.make_node("Identity", [logits], ["logits"], name="logits"))
    g.nodes.append(onnx.helper.make_node("Softmax", ["logits"], ["scores"], axis=-1, name="scores"))
    return kernel.shape[1]


def build(variables, depth: int, views: int | None, height: int, width: int,
          input_kind: str = "uint8", mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """The ONNX ``ModelProto`` of the eval graph of a TSN with these ``variables``; ``views``
    None leaves the views dimension symbolic (what ``ppsn.export`` writes)."""
    onnx = _onnx()
    plan.check_depth(depth)
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
    params, stats = variables["params"]["backbone"], variables["batch_stats"]["backbone"]
    g = _Graph(onnx)
    elem = onnx.TensorProto.UINT8 if input_kind == "uint8" else onnx.TensorProto.FLOAT
    frames = onnx.helper.make_tensor_value_info(
        "frames", elem, ["n", "views" if views is None else views, height, width, 3])
    g.nodes.append(onnx.helper.make_node("Shape", ["frames"], [CLIP_SHAPE], name=CLIP_SHAPE,
                                         start=0, end=2))
    x = _normalized_input(g, onnx, input_kind, height, width, mean, std)
    x = _backbone(g, x, params, stats, depth, height, width)
    classes = _head(g, onnx, x, variables["params"]["fc"])
    outputs = [onnx.helper.make_tensor_value_info(k, onnx.TensorProto.FLOAT, ["n", classes])
               for k in ("logits", "scores")]
    graph = onnx.helper.make_graph(g.nodes, f"ppsn_tsn_r{depth}", [frames], outputs,
                                   initializer=g.initializers)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   producer_name="ppsn")
    model.ir_version = min(model.ir_version, 8)  # readable by older runtimes too
    onnx.checker.check_model(model, full_check=True)
    return model


def save(model, path) -> None:
    """Writes ``model`` to a path or a binary file object; weights over 2 GB (ResNet-200 TSNs fit below) would need external data."""
    _onnx().save_model(model, path)


def split_at_stem(model):
    """``(stem, body)``: ``frames -> stem, clip_shape`` and ``stem, clip_shape -> logits,
    scores`` as two models."""
    onnx = _onnx()
    from onnx.utils import Extractor

    extractor = Extractor(onnx.shape_inference.infer_shapes(model))
    return (extractor.extract_model(["frames"], [STEM, CLIP_SHAPE]),
            extractor.extract_model([STEM, CLIP_SHAPE], ["logits", "scores"]))
