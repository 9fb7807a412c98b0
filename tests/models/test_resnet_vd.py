import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppsn.models import STAGE_BLOCKS, ResNetVd, feature_dim
from ppsn.models.resnet_vd import ConvBN, avg_pool_2x2_ceil_exclusive


def _reference_avg_pool(x):
    """Paddle AvgPool2D(2, 2, padding 0, ceil_mode=True, exclusive=True), by loops."""
    n, h, w, c = x.shape
    oh, ow = math.ceil(h / 2), math.ceil(w / 2)
    out = np.zeros((n, oh, ow, c), x.dtype)
    for i in range(oh):
        for j in range(ow):
            win = x[:, 2 * i:min(2 * i + 2, h), 2 * j:min(2 * j + 2, w), :]
            out[:, i, j, :] = win.mean(axis=(1, 2))
    return out


@pytest.mark.parametrize("h,w", [(7, 7), (8, 6), (5, 8), (1, 3)])
def test_avg_pool_ceil_mode_is_exclusive(h, w):
    x = np.random.RandomState(0).randn(2, h, w, 3).astype(np.float32)
    got = np.asarray(avg_pool_2x2_ceil_exclusive(jnp.asarray(x)))
    np.testing.assert_allclose(got, _reference_avg_pool(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("depth", sorted(STAGE_BLOCKS))
def test_structure_and_output_shape(depth):
    model = ResNetVd(depth=depth)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 112, 112, 3))))
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 112, 112, 3))), variables)
    assert out.shape == (2, 4, 4, feature_dim(depth))
    params = variables["params"]
    blocks = sorted(k for k in params if k.startswith("bb_"))
    assert len(blocks) == sum(STAGE_BLOCKS[depth])
    # Projection shortcuts exactly in the first block of each stage.
    with_short = sorted(k for k in blocks if "short" in params[k])
    assert with_short == ["bb_0_0", "bb_1_0", "bb_2_0", "bb_3_0"]
    # The first block's projection is 1x1 even when widths agree (R18/34: 64 -> 64).
    assert params["bb_0_0"]["short"]["conv"]["kernel"].shape[:2] == (1, 1)
    units = {"conv0", "conv1", "conv2"} if depth >= 50 else {"conv0", "conv1"}
    assert set(params["bb_1_1"]) == units
    assert params["conv1_1"]["conv"]["kernel"].shape == (3, 3, 3, 32)
    assert params["conv1_3"]["conv"]["kernel"].shape == (3, 3, 32, 64)
    for leaf in jax.tree_util.tree_leaves(variables):
        assert leaf.dtype == jnp.float32


def test_invalid_depth_is_a_clear_error():
    with pytest.raises(ValueError, match="depth must be one of"):
        ResNetVd(depth=42).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def test_odd_sizes_follow_ceil_mode():
    # 112 -> 56 -> 28 (max pool) -> 28 -> 14 -> 7 -> 4 (ceil): like Paddle's case A.
    model = ResNetVd(depth=18)
    out = jax.eval_shape(
        lambda: model.init_with_output(jax.random.key(0), jnp.zeros((1, 100, 130, 3)))[0])
    assert out.shape == (1, 4, 5, 512)


def test_conv_padding_is_symmetric_not_same():
    """A stride-2 3x3 conv pads 1 on both sides (Paddle), which differs from XLA's SAME."""
    x = jax.random.normal(jax.random.key(1), (1, 8, 8, 2))
    unit = ConvBN(4, 3, strides=2, relu=False)
    variables = unit.init(jax.random.key(2), x, train=False)
    got = unit.apply(variables, x, train=False)
    kernel = variables["params"]["conv"]["kernel"]
    dn = ("NHWC", "HWIO", "NHWC")
    sym = jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=dn)
    same = jax.lax.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=dn)
    bn = variables["params"]["bn"]
    stats = variables["batch_stats"]["bn"]
    ref = (sym - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-5) * bn["scale"] + bn["bias"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert not np.allclose(sym, same, atol=1e-3)


def test_batchnorm_momentum_and_epsilon_follow_paddle():
    """running = 0.9 * running + 0.1 * batch statistic (biased variance); epsilon 1e-5."""
    x = jax.random.normal(jax.random.key(3), (4, 6, 6, 3)) * 2.0 + 1.0
    unit = ConvBN(5, 1, relu=False)
    variables = unit.init(jax.random.key(4), x, train=False)
    _, updated = unit.apply(variables, x, train=True, mutable=["batch_stats"])
    conv = jnp.einsum("nhwc,cd->nhwd", x, variables["params"]["conv"]["kernel"][0, 0])
    stats = updated["batch_stats"]["bn"]
    np.testing.assert_allclose(stats["mean"], 0.1 * conv.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * conv.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)


def test_initialization_is_kaiming_normal_fan_in():
    model = ResNetVd(depth=18)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    kernel = np.asarray(params["bb_3_1"]["conv1"]["conv"]["kernel"])  # 3x3x512x512
    fan_in = 3 * 3 * 512
    assert abs(kernel.std() / math.sqrt(2 / fan_in) - 1) < 0.02
    assert abs(kernel.mean()) < 1e-3
    # Untruncated normal: a 2.6M-draw sample has values beyond 2 std (a truncated one does not).
    assert np.abs(kernel).max() > 3 * math.sqrt(2 / fan_in)
    np.testing.assert_array_equal(params["bb_3_1"]["conv1"]["bn"]["scale"], 1.0)
    np.testing.assert_array_equal(params["bb_3_1"]["conv1"]["bn"]["bias"], 0.0)


def test_bf16_compute_keeps_float32_variables():
    model = ResNetVd(depth=18, dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = jax.jit(model.init)(jax.random.key(1), x)  # jitted: op by op is slower here
    out, updated = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, x)
    assert out.dtype == jnp.bfloat16
    for leaf in jax.tree_util.tree_leaves((variables, updated)):
        assert leaf.dtype == jnp.float32


@pytest.mark.parametrize("shape,k,stride", [((2, 2, 2, 8), 3, 1), ((2, 7, 5, 4), 3, 2),
                                            ((1, 9, 9, 3), 3, 2), ((2, 4, 4, 6), 1, 1),
                                            ((1, 6, 6, 3), 1, 1)])
def test_conv_implementations_agree(shape, k, stride):
    from ppsn.models.conv import conv2d

    x = jax.random.normal(jax.random.key(0), shape)
    kernel = jax.random.normal(jax.random.key(1), (k, k, shape[-1], 5))
    p = (k - 1) // 2
    ref = jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((p, p), (p, p)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    for impl in ("auto", "matmul", "xla", "im2col"):
        np.testing.assert_allclose(conv2d(x, kernel, stride, impl), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="conv_impl"):
        conv2d(x, kernel, stride, "winograd")
