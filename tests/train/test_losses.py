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


def _both_topk(logits, labels, k):
    """The training (jax) and test-mode (numpy) top-k; asserts they agree."""
    got = np.asarray(losses.topk_correct(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), k))
    host = losses.topk_correct_numpy(np.asarray(logits, np.float32), np.asarray(labels), k)
    assert host.dtype == bool
    np.testing.assert_array_equal(got, host.astype(np.float32))
    return host.tolist()


def test_topk_all_equal_logits_are_never_top1():
    # A collapsed model (all logits equal) must not score top-1 = 1.0.
    labels = np.arange(4)
    assert _both_topk(np.zeros((4, 4)), labels, 1) == [False] * 4
    assert _both_topk(np.zeros((4, 4)), labels, 3) == [False] * 4
    assert _both_topk(np.zeros((4, 4)), labels, 4) == [True] * 4  # k == num_classes
    assert _both_topk(np.zeros((2, 1)), [0, 0], 1) == [True, True]  # one class: nothing to tie


def test_topk_two_way_tie_at_the_top():
    logits = np.array([[0.2, 0.9, 0.9, 0.1]] * 2)
    assert _both_topk(logits, [1, 2], 1) == [False, False]
    assert _both_topk(logits, [1, 2], 2) == [True, True]


def test_topk_k_boundary_and_a_tie_at_the_kth_place():
    logits = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    # label ranked 3rd: in top-3, not in top-2; ranked 4th: not in top-3
    assert _both_topk(logits, [2], 3) == [True]
    assert _both_topk(logits, [2], 2) == [False]
    assert _both_topk(logits, [3], 3) == [False]
    tied = np.array([[0.9, 0.8, 0.7, 0.7, 0.5]])  # classes 2 and 3 share the 3rd place
    assert _both_topk(tied, [2], 3) == [False] and _both_topk(tied, [3], 3) == [False]
    assert _both_topk(tied, [2], 4) == [True] and _both_topk(tied, [3], 4) == [True]


def test_topk_nan_scores_count_against_the_label():
    logits = np.array([[np.nan, 0.1, 0.2], [0.5, np.nan, 0.2]])
    assert _both_topk(logits, [0, 0], 1) == [False, False]
    assert _both_topk(logits, [0, 0], 2) == [False, True]


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
