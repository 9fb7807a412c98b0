import jax
import jax.numpy as jnp
import numpy as np

from ppsn.train import losses


def test_label_smoothing_matches_paddle_formula():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)), jnp.float32)
    labels = jnp.asarray([0, 3, 4, 1])
    got = losses.smoothed_cross_entropy(logits, labels, 5, 0.1)
    target = np.full((4, 5), 0.1 / 5)
    target[np.arange(4), np.asarray(labels)] += 0.9
    logp = np.asarray(jax.nn.log_softmax(logits))
    np.testing.assert_allclose(got, -(target * logp).sum(-1), rtol=1e-6)
    plain = losses.smoothed_cross_entropy(logits, labels, 5, 0.0)
    np.testing.assert_allclose(plain, -logp[np.arange(4), np.asarray(labels)], rtol=1e-6)


def test_topk_correct():
    logits = jnp.asarray([[0.1, 0.9, 0.5], [0.8, 0.1, 0.3]])
    labels = jnp.asarray([2, 0])
    np.testing.assert_array_equal(losses.topk_correct(logits, labels, 1), [0.0, 1.0])
    np.testing.assert_array_equal(losses.topk_correct(logits, labels, 2), [1.0, 1.0])


def test_mixup_one_lambda_and_a_permutation():
    images = jnp.arange(6, dtype=jnp.float32).reshape(6, 1) * jnp.ones((6, 4))
    labels = jnp.arange(6)
    mixed, labels_b, lam = losses.mixup(images, labels, jax.random.key(3), 0.2)
    assert 0.0 <= float(lam) <= 1.0
    assert sorted(np.asarray(labels_b).tolist()) == list(range(6))
    expected = lam * images + (1 - lam) * images[np.asarray(labels_b)]
    np.testing.assert_allclose(mixed, expected, rtol=1e-6)
    lams = [float(losses.mixup(images, labels, jax.random.key(i), 0.2)[2]) for i in range(400)]
    # Beta(0.2, 0.2) is U-shaped: most draws are near 0 or 1.
    assert np.mean([(l < 0.1) or (l > 0.9) for l in lams]) > 0.5
