"""Parameters and FLOPs of a TSN counted from the block plan (:mod:`ppsn.models.plan`), numpy-free.

FLOPs are 2 x multiply-adds of the convolutions and the fc layer (mmaction2's ``get_flops.py``
and PaddleVideo's convention counts multiply-adds; the element-wise BatchNorm, ReLU, pooling
and residual adds are left out: ~1% of a ResNet's). The backward pass of a convolution costs
twice its forward (gradients of its input and of its kernel), except that nothing needs the
gradient of the frames, so the first convolution's backward is one forward.
"""

from __future__ import annotations

import dataclasses

from ppsn.models import plan


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    name: str
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    in_height: int
    in_width: int

    @property
    def out_height(self) -> int:
        return _out(self.in_height, self.stride)

    @property
    def out_width(self) -> int:
        return _out(self.in_width, self.stride)

    @property
    def macs(self) -> int:
        return (self.kernel * self.kernel * self.in_channels * self.out_channels
                * self.out_height * self.out_width)

    @property
    def valid_macs(self) -> int:
        """Multiply-adds on real inputs only (not on the zero padding): what XLA's cost
        analysis counts."""
        return (_taps(self.in_height, self.kernel, self.stride)
                * _taps(self.in_width, self.kernel, self.stride)
                * self.in_channels * self.out_channels)

    @property
    def params(self) -> int:  # the kernel and its BatchNorm's scale and bias
        kernel = self.kernel * self.kernel * self.in_channels * self.out_channels
        return kernel + 2 * self.out_channels


def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # 3x3 pad 1, 1x1 pad 0, and the 2x2 ceil-mode pool


def _taps(size: int, kernel: int, stride: int) -> int:
    """Kernel taps that land inside a ``size`` input, summed over the output positions."""
    pad = (kernel - 1) // 2
    return sum(sum(0 <= o * stride - pad + i < size for i in range(kernel))
               for o in range(_out(size, stride)))


def conv_layers(depth: int, height: int, width: int) -> list[ConvLayer]:
    """Every convolution of ResNet-``depth``-vd on one ``height x width`` frame, in order."""
    layers, c, h, w = [], 3, height, width
    for name, features, stride in plan.STEM:
        layers.append(ConvLayer(name, 3, stride, c, features, h, w))
        c, h, w = features, _out(h, stride), _out(w, stride)
    h, w = _out(h, 2), _out(w, 2)  # the stem's max pool
    bottleneck = plan.uses_bottleneck(depth)
    for block in plan.blocks(depth):
        s, width_ = block.stride, block.width
        ho, wo = _out(h, s), _out(w, s)
        if bottleneck:
            out = width_ * 4
            layers += [ConvLayer(f"{block.name}.conv0", 1, 1, c, width_, h, w),
                       ConvLayer(f"{block.name}.conv1", 3, s, width_, width_, h, w),
                       ConvLayer(f"{block.name}.conv2", 1, 1, width_, out, ho, wo)]
        else:
            out = width_
            layers += [ConvLayer(f"{block.name}.conv0", 3, s, c, width_, h, w),
                       ConvLayer(f"{block.name}.conv1", 3, 1, width_, width_, ho, wo)]
        if block.projection:  # a stride-1 1x1 conv after the "D" pool (when pooled)
            layers.append(ConvLayer(f"{block.name}.short", 1, 1, c, out, ho, wo))
        c, h, w = out, ho, wo
    return layers


def count(depth: int, num_classes: int, size: int, train_frames: int, test_views: int) -> dict:
    """``params``, ``forward_flops_per_frame`` (the backbone on one ``size x size`` frame),
    ``train_flops_per_clip`` (forward + backward over ``train_frames`` frames and the fc) and
    ``test_flops_per_video`` (forward over ``test_views`` views and the fc)."""
    layers = conv_layers(depth, size, size)
    features = plan.feature_dim(depth)
    frame = 2 * sum(layer.macs for layer in layers)
    fc = 2 * features * num_classes
    first_backward = 2 * layers[0].macs  # the kernel's gradient only
    return {"params": sum(layer.params for layer in layers) + features * num_classes + num_classes,
            "forward_flops_per_frame": frame,
            "train_flops_per_clip": train_frames * (3 * frame - first_backward) + 3 * fc,
            "test_flops_per_video": test_views * frame + fc}
