"""The metric reducers on hand-computed examples."""

import numpy as np
import pytest

from ppsn.evaluation import metrics


def test_mean_class_top1_averages_classes_present_not_videos():
    # class 0: 3 videos, 3 right; class 2: 1 video, wrong; class 1 absent.
    labels = np.array([0, 0, 0, 2])
    scores = np.array([[.9, .1, 0], [.8, .2, 0], [.7, .3, 0], [.5, .4, .1]], np.float32)
    got = metrics.summarize(scores, labels)
    assert got["top1"] == pytest.approx(0.75)
    assert got["mean_class_top1"] == pytest.approx(0.5)  # (1 + 0) / 2, not (1 + 0 + 0) / 3
    hits, count = metrics.class_sums(metrics.topk_correct(scores, labels, 1), labels, 3)
    assert hits.tolist() == [3, 0, 0] and count.tolist() == [3, 0, 1]
    assert metrics.mean_class_from_sums(hits, count) == got["mean_class_top1"]


def test_failed_videos_ties_and_nan_count_as_wrong():
    labels = np.array([0, 1, 1])
    scores = np.array([[.9, .1], [.5, .5], [np.nan, np.nan]], np.float32)
    assert metrics.topk_correct(scores, labels, 1).tolist() == [True, False, False]
    assert metrics.topk_correct(scores, labels, 1, failed=[True, False, False]).tolist() == \
        [False, False, False]


def test_fusing_a_run_with_itself_gives_its_scores_exactly():
    scores = np.random.default_rng(0).dirichlet(np.ones(7), size=50).astype(np.float32)
    np.testing.assert_array_equal(metrics.fuse([scores, scores]), scores)
    fused = metrics.fuse([scores, np.eye(7, dtype=np.float32)[np.zeros(50, int)]], [3, 1])
    np.testing.assert_allclose(fused[:, 0], 0.75 * scores[:, 0] + 0.25, rtol=1e-6)
