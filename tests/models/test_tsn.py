import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppsn.models import TSN


@pytest.fixture(scope="module")
def tiny():
    model = TSN(depth=18, num_classes=7, dropout_rate=0.4)
    x = jax.random.normal(jax.random.key(0), (2, 3, 32, 32, 3))
    variables = jax.jit(model.init)(jax.random.key(1), x)  # jitted: op by op is slower
    return model, variables, x


def test_logits_shape_and_head_init(tiny):
    model, variables, x = tiny
    logits = model.apply(variables, x)
    assert logits.shape == (2, 7) and logits.dtype == jnp.float32
    assert set(variables) == {"params", "batch_stats"}
    fc = variables["params"]["fc"]
    assert fc["kernel"].shape == (512, 7)
    np.testing.assert_array_equal(fc["bias"], 0.0)
    big = jax.jit(TSN(depth=18, num_classes=2000).init)(jax.random.key(2), x)["params"]["fc"][
        "kernel"]
    assert abs(float(big.std()) - 0.01) < 0.0005


def test_head_averages_features_over_frames(tiny):
    model, variables, x = tiny
    # Mean over T: the order of the frames does not matter, and a clip of T copies of one
    # frame gives the same logits as that frame alone.
    np.testing.assert_allclose(model.apply(variables, x), model.apply(variables, x[:, ::-1]),
                               rtol=1e-5, atol=1e-5)
    one = x[:, :1]
    np.testing.assert_allclose(model.apply(variables, one),
                               model.apply(variables, jnp.repeat(one, 4, axis=1)),
                               rtol=1e-5, atol=1e-5)
    pooled = model.apply(variables, x, method=TSN.features)
    fc = variables["params"]["fc"]
    np.testing.assert_allclose(model.apply(variables, x), pooled @ fc["kernel"] + fc["bias"],
                               rtol=1e-5, atol=1e-5)


def test_dropout_only_in_training(tiny):
    model, variables, x = tiny
    a = model.apply(variables, x, train=False)
    b = model.apply(variables, x, train=False)
    np.testing.assert_array_equal(a, b)
    t1, _ = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(5)},
                        mutable=["batch_stats"])
    t2, _ = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(6)},
                        mutable=["batch_stats"])
    assert not np.allclose(t1, t2)


def test_rejects_input_without_time_axis(tiny):
    model, variables, x = tiny
    with pytest.raises(ValueError, match=r"\[N, T, H, W, C\]"):
        model.apply(variables, x[:, 0])


def test_chunked_logits_equal_the_whole_clip(tiny):
    from ppsn.models import chunked_logits

    model, variables, _ = tiny
    x = jax.random.normal(jax.random.key(4), (2, 12, 32, 32, 3))
    whole = model.apply(variables, x)
    for chunk in (1, 4, 5, 12, 50):  # 5 does not divide 12: the largest divisor <= 5 is used
        np.testing.assert_allclose(chunked_logits(model, variables, x, chunk), whole,
                                   rtol=1e-5, atol=1e-5)


def test_every_conv_impl_gives_the_same_logits(tiny):
    """The same weights through every convolution implementation ('auto' is 'matmul' on this
    CPU, 'xla' on GPU/TPU): the same logits up to float summation order."""
    from ppsn.backend import CONV_IMPLS

    _, variables, x = tiny
    logits = {impl: TSN(depth=18, num_classes=7, conv_impl=impl).apply(variables, x)
              for impl in CONV_IMPLS}
    for impl, got in logits.items():
        np.testing.assert_allclose(got, logits["xla"], rtol=1e-4, atol=1e-5, err_msg=impl)


def test_xla_convolutions_lower_to_convolutions_only(tiny):
    """What GPUs and TPUs get: every k x k layer a native convolution, no im2col patches and no
    matrix products besides the classifier; the CPU choice turns them into matrix products."""
    _, variables, x = tiny

    def count(impl):
        text = jax.jit(TSN(depth=18, num_classes=7, conv_impl=impl).apply).lower(
            variables, x).as_text()
        return text.count("stablehlo.convolution"), text.count("stablehlo.dot_general")

    convs = 3 + 8 * 2 + 4  # stem, two per basic block, four projection shortcuts
    assert count("xla") == (convs, 1)
    conv_matmul, dots_matmul = count("matmul")
    assert conv_matmul < convs and dots_matmul > 1
