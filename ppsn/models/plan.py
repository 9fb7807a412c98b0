"""The ResNet-vd block plan and the "D" shortcut pool's window counts, for every model builder.

Written once, numpy only (no jax or flax), so that the Flax model (:mod:`ppsn.models.resnet_vd`)
and the ONNX graph builder (:mod:`ppsn.serve.onnx_graph`) build the same network from the same
facts (``shared/docs/RECIPE.md``):

* the deep stem: three 3x3 conv-BN-ReLU (3->32 stride 2, 32->32, 32->64), then a 3x3 max pool,
  stride 2, padding 1;
* stages of 64, 128, 256, 512 channels (x4 after a bottleneck block) with 2,2,2,2 (ResNet-18),
  3,4,6,3 (34 and 50), 3,4,23,3 (101), 3,8,36,3 (152) or 3,12,48,3 (200) blocks; the first
  block of stages 2-4 carries stride 2;
* the first block of each stage has a projection shortcut: a plain 1x1 conv-BN in stage 1, the
  "D" 2x2 average pool (stride 2, ceil mode, exclusive of padding) then a 1x1 conv-BN after.
"""

from __future__ import annotations

import dataclasses

import numpy as np

STAGE_BLOCKS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 12, 48, 3),
}
STAGE_WIDTHS = (64, 128, 256, 512)
# The deep stem: (name, output channels, stride) of its three 3x3 conv-BN-ReLU units.
STEM = (("conv1_1", 32, 2), ("conv1_2", 32, 1), ("conv1_3", 64, 1))
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


@dataclasses.dataclass(frozen=True)
class Block:
    """One residual block: its parameter name, width, stride and shortcut."""

    name: str  # bb_{stage}_{index}, PaddleVideo's structured name
    width: int  # the 3x3 convolution's channels (the output is x4 for bottleneck blocks)
    stride: int
    projection: bool  # a 1x1 conv-BN shortcut (the first block of each stage)
    pooled_projection: bool  # ... preceded by the "D" 2x2 average pool (stages 2-4)


def check_depth(depth: int) -> None:
    if depth not in STAGE_BLOCKS:
        raise ValueError(f"ResNet-vd depth must be one of {sorted(STAGE_BLOCKS)}, got {depth!r}")


def uses_bottleneck(depth: int) -> bool:
    """True for the depths built from bottleneck blocks (50 and deeper)."""
    return depth >= 50


def feature_dim(depth: int) -> int:
    """Channels of the backbone output: 2048 for bottleneck depths, 512 otherwise."""
    check_depth(depth)
    return STAGE_WIDTHS[-1] * (4 if uses_bottleneck(depth) else 1)


def blocks(depth: int) -> list[Block]:
    """Every residual block of ResNet-``depth``-vd, in order."""
    check_depth(depth)
    return [Block(name=f"bb_{stage}_{i}", width=STAGE_WIDTHS[stage],
                  stride=2 if (i == 0 and stage > 0) else 1,
                  projection=i == 0, pooled_projection=i == 0 and stage > 0)
            for stage, num_blocks in enumerate(STAGE_BLOCKS[depth]) for i in range(num_blocks)]


def depth_of(block_names, bottleneck: bool) -> int | None:
    """The depth whose plan has exactly these residual blocks (``bb_{stage}_{index}`` names,
    any extra parts after the name ignored) in bottleneck (or basic) form; None if none has.

    What a checkpoint holds, said in the user's words: "a ResNet-50" rather than key lists."""
    counts: dict[int, set] = {}
    for name in block_names:
        parts = str(name).split("_")
        if len(parts) == 3 and parts[0] == "bb" and parts[1].isdigit() and parts[2].isdigit():
            counts.setdefault(int(parts[1]), set()).add(int(parts[2]))
    per_stage = tuple(len(counts.get(stage, ())) for stage in range(max(counts, default=-1) + 1))
    for depth, stage_blocks in STAGE_BLOCKS.items():
        if stage_blocks == per_stage and uses_bottleneck(depth) == bottleneck:
            return depth
    return None


def depth_of_variables(variables) -> int | None:
    """:func:`depth_of` for ppsn's (Flax) variables ``{'params': {'backbone': ...}, ...}``."""
    backbone = variables.get("params", {}).get("backbone", {})
    blocks_ = {k: v for k, v in backbone.items() if str(k).startswith("bb_")}
    return depth_of(blocks_, any("conv2" in v for v in blocks_.values()))


def pool_window_counts(height: int, width: int) -> np.ndarray | None:
    """Values per window of the "D" pool (2x2, stride 2, ceil mode, exclusive of padding) over a
    ``height x width`` map: ``[ceil(h/2), ceil(w/2)]`` floats (4 inside, 2 or 1 in an extra
    last row/column of an odd size), or None when every window holds 4 values."""
    pad_h, pad_w = height % 2, width % 2
    if not (pad_h or pad_w):
        return None
    rows = np.full((height + pad_h) // 2, 2.0)
    cols = np.full((width + pad_w) // 2, 2.0)
    if pad_h:
        rows[-1] = 1.0
    if pad_w:
        cols[-1] = 1.0
    return rows[:, None] * cols[None, :]
