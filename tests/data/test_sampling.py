import json

import numpy as np
import pytest

from ppsn.data.sampling import sample_segments
from tests.conftest import require_fixture


def _cases(name):
    path = require_fixture(f"paddle_pipeline/{name}")
    with open(path) as f:
        return json.load(f)


def _parse(key):
    fields = dict(part.split("=") for part in key.split(","))
    return int(fields["num_seg"]), int(fields["frames_len"])


def test_valid_and_test_match_paddlevideo():
    checked = 0
    for key, case in _cases("sampler_valid_indices.json")["indices"].items():
        num_seg, frames_len = _parse(key)
        if frames_len <= num_seg:
            continue  # PaddleVideo breaks there (float index): ppsn's own rule, tested below
        for mode in ("valid", "test"):
            got = sample_segments(frames_len, num_seg, mode) + 1  # fixture is 1-based
            assert got.tolist() == case["frames_idx"], key
        checked += 1
    assert checked >= 20


def test_train_support_matches_paddlevideo():
    rng = np.random.default_rng(0)
    checked = 0
    for key, case in _cases("train_pipeline_facts.json")["train_sampler_support"].items():
        num_seg, frames_len = _parse(key)
        if frames_len < num_seg:
            continue
        draws = np.stack([sample_segments(frames_len, num_seg, "train", rng) + 1
                          for _ in range(3000)])
        for segment, support in enumerate(case["support_per_segment"]):
            assert sorted(set(draws[:, segment].tolist())) == sorted(support), (key, segment)
        checked += 1
    assert checked >= 5


def test_train_draws_are_uniform_within_segments_and_skip_the_tail():
    draws = np.stack([sample_segments(47, 3, "train", np.random.default_rng(i)) for i in range(3000)])
    assert draws.max() == 44  # frames 46, 47 (1-based) are never drawn
    counts = np.bincount(draws[:, 0], minlength=15)
    assert counts.min() > 120 and counts.max() < 280  # ~200 each


def test_linspace_mode():
    assert sample_segments(300, 8, "linspace").tolist() == [0, 42, 85, 128, 170, 213, 256, 299]
    assert sample_segments(5, 3, "linspace").tolist() == [0, 2, 4]


@pytest.mark.parametrize("mode", ["train", "valid", "test", "linspace"])
@pytest.mark.parametrize("frames_len,num_seg", [(1, 3), (2, 3), (3, 3), (3, 8), (7, 25)])
def test_short_videos_repeat_frames_and_never_fail(mode, frames_len, num_seg):
    got = sample_segments(frames_len, num_seg, mode, np.random.default_rng(0))
    assert got.shape == (num_seg,) and got.dtype == np.int64
    assert got.min() >= 0 and got.max() < frames_len
    assert np.all(np.diff(got) >= 0)
    if mode != "linspace" and not (mode == "train" and frames_len >= num_seg):
        assert got.tolist() == [i * frames_len // num_seg for i in range(num_seg)]
        assert set(got.tolist()) == set(range(frames_len))  # every frame is used


def test_bad_arguments():
    with pytest.raises(ValueError, match="0 frames"):
        sample_segments(0, 3, "valid")
    with pytest.raises(ValueError, match="rng"):
        sample_segments(10, 3, "train")
    with pytest.raises(ValueError, match="mode"):
        sample_segments(10, 3, "dense")
