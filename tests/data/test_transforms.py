"""Bit-exactness against PaddleVideo's own pipeline outputs (shared/fixtures/paddle_pipeline),
with the frames read from both sources: the frame folders (list files) and a TFDS dataset
prepared from them."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppsn.data import transforms as T
from ppsn.data.clips import ClipSpec, load_clip
from ppsn.data.decode import decode_jpeg_frames, read_frame_files
from ppsn.data.lists import ListFileSource
from tests.conftest import require_fixture

CLIPS = {"clip0": 47, "clip1": 13, "clip2": 9}


@pytest.fixture(scope="module")
def fx():
    return require_fixture("paddle_pipeline")


@pytest.fixture(scope="module")
def sources(fx, tmp_path_factory):
    """``{'list': {clip: record}, 'tfds': {clip: record}}``: the fixture's frame folders through
    a list file, and prepared as a TFDS frames dataset by ``ppsn.data.prepare``."""
    from ppsn.data.prepare import prepare
    from ppsn.data.tfds import TfdsSource

    manual = tmp_path_factory.mktemp("fixture_lists")
    (manual / "train_frames.list").write_text(
        "".join(f"{fx / 'frames' / clip} {n} 0\n" for clip, n in CLIPS.items()))
    out = tmp_path_factory.mktemp("fixture_tfds")
    prepare("ucf101", str(manual), str(out), "frames")
    found = {}
    for name, source in (("list", ListFileSource(str(manual / "train_frames.list"), "frames")),
                         ("tfds", TfdsSource("ucf101", "train", str(out), "frames"))):
        found[name] = {os.path.basename(source[i]["video_id"]): source[i]
                       for i in range(len(source))}
    return found


@pytest.fixture(params=["list", "tfds"])
def frames(request, fx):
    """``frames(clip, one_based_indices)`` -> decoded frames, from one source."""
    if request.param == "list":
        return lambda clip, idx: read_frame_files(str(fx / "frames" / clip), [i - 1 for i in idx])
    records = request.getfixturevalue("sources")["tfds"]
    return lambda clip, idx: decode_jpeg_frames(records[clip]["jpegs"], [i - 1 for i in idx], clip)


def _load(fx, name):
    data = np.load(fx / name)
    return data["imgs"] if name.endswith(".npz") else data


def test_decode_matches_pil(fx, frames):
    np.testing.assert_array_equal(frames("clip0", [8, 24, 40]),
                                  _load(fx, "clip0_valid_seg3_decoded_uint8.npy"))


@pytest.mark.parametrize("clip,idx", [("clip0", [8, 24, 40]), ("clip1", [3, 7, 11]),
                                      ("clip2", [2, 5, 8])])
def test_valid_pipeline_bit_exact(fx, clip, idx, frames):
    scaled = T.scale(frames(clip, idx), 256)
    if clip != "clip0":
        np.testing.assert_array_equal(scaled, _load(fx, f"{clip}_valid_seg3_scaled_uint8.npy"))
    else:
        assert scaled.shape == (3, 256, 340, 3)  # short side already 256: unchanged
    np.testing.assert_array_equal(T.center_crop(scaled, 224),
                                  _load(fx, f"{clip}_valid_seg3_centercrop_uint8.npy"))


@pytest.mark.parametrize("clip,idx,name", [
    ("clip0", [8, 24, 40], "clip0_test_seg3_tencrop_uint8.npz"),
    ("clip1", [7], "clip1_test_seg1_tencrop_uint8.npy"),
    ("clip2", [5], "clip2_test_seg1_tencrop_uint8.npy"),
])
def test_ten_crop_bit_exact(fx, clip, idx, name, frames):
    np.testing.assert_array_equal(T.ten_crop(T.scale(frames(clip, idx), 256), 224),
                                  _load(fx, name))


@pytest.mark.parametrize("source", ["list", "tfds"])
def test_clips_from_both_sources_are_bit_exact(fx, sources, source):
    """Sampling, decoding and the transforms end to end, from the source's records."""
    records = sources[source]
    for clip in CLIPS:
        np.testing.assert_array_equal(load_clip(records[clip], ClipSpec("valid", 3, 256, 224)),
                                      _load(fx, f"{clip}_valid_seg3_centercrop_uint8.npy"))
    np.testing.assert_array_equal(load_clip(records["clip0"], ClipSpec("test", 3, 256, 224)),
                                  _load(fx, "clip0_test_seg3_tencrop_uint8.npz"))


def test_ten_crop_offsets_use_integer_steps():
    assert T.ten_crop_offsets(455, 256, 224) == [(0, 0), (228, 0), (0, 32), (228, 32), (114, 16)]
    assert T.ten_crop_offsets(256, 313, 224) == [(0, 0), (32, 0), (0, 88), (32, 88), (16, 44)]


def test_forced_train_runs_bit_exact(fx, frames):
    t1 = T.flip(T.resized_crop(T.scale(frames("clip0", [6, 27, 43]), 256),
                               T.pil_crop_box(29.0, 16.0, 224, 192), 224))
    np.testing.assert_array_equal(t1, _load(fx, "train_T1_clip0_after_flip_uint8.npy"))
    box = T.pil_crop_box(99.5, 32.0, 256, 224)
    assert box == (100, 32, 356, 256)
    t2 = T.resized_crop(T.scale(frames("clip1", [1, 8, 10]), 256), box, 224)
    np.testing.assert_array_equal(t2, _load(fx, "train_T2_clip1_after_flip_uint8.npy"))


def test_multiscale_crop_pairs_offsets_and_boxes(fx):
    with open(fx / "train_pipeline_facts.json") as f:
        facts = json.load(f)["multiscalecrop"]
    for case in facts.values():
        width, height = case["input_wh"]
        assert [list(p) for p in T.multiscale_crop_sizes(width, height, 224)] == case["pairs"]
        for cand in case["candidates"]:
            offsets = T.multiscale_crop_offsets(width, height, cand["crop_w"], cand["crop_h"])
            assert [list(o) for o in offsets] == cand["offsets_list_in_code_order"]
            for d in cand["distinct_offsets"]:
                box = T.pil_crop_box(d["offset_w"], d["offset_h"], cand["crop_w"], cand["crop_h"])
                assert list(box) == d["pil_crop_box"]


def test_multi_scale_crop_draws_pairs_and_offsets_uniformly():
    frames = np.random.default_rng(0).integers(0, 256, (1, 256, 340, 3), dtype=np.uint8)
    out = T.multi_scale_crop(frames, 224, np.random.default_rng(1))
    assert out.shape == (1, 224, 224, 3) and out.dtype == np.uint8
    # The (crop, offset) choice reproduces through resized_crop with the same draws.
    rng = np.random.default_rng(7)
    pairs = T.multiscale_crop_sizes(340, 256, 224)
    cw, ch = pairs[rng.integers(len(pairs))]
    x, y = T.multiscale_crop_offsets(340, 256, cw, ch)[rng.integers(13)]
    np.testing.assert_array_equal(T.multi_scale_crop(frames, 224, np.random.default_rng(7)),
                                  T.resized_crop(frames, T.pil_crop_box(x, y, cw, ch), 224))


def test_random_flip_is_one_draw_per_clip():
    frames = np.random.default_rng(0).integers(0, 256, (4, 8, 9, 3), dtype=np.uint8)
    flips = 0
    for seed in range(200):
        out = T.random_flip(frames, np.random.default_rng(seed))
        same = [np.array_equal(out[t], frames[t]) for t in range(4)]
        assert all(same) or not any(same)
        flips += not same[0]
    assert 70 < flips < 130


def test_normalize_bit_exact_on_host_and_within_1e6_on_device(fx):
    crops = _load(fx, "clip0_valid_seg3_centercrop_uint8.npy")
    expected = _load(fx, "clip0_valid_seg3_output_float32.npy")  # [T, C, H, W]
    np.testing.assert_array_equal(T.normalize(crops).transpose(0, 3, 1, 2), expected)
    on_device = np.asarray(jax.jit(T.normalize)(jnp.asarray(crops)))
    np.testing.assert_allclose(on_device.transpose(0, 3, 1, 2), expected, rtol=0, atol=1e-6)
    # every level of every channel, against PaddleVideo's float32 order of operations
    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    arithmetic = np.asarray(jax.jit(T.normalize)(jnp.asarray(levels)))
    np.testing.assert_allclose(arithmetic, T.normalization_table(), rtol=0, atol=1e-6)
    assert not np.array_equal(arithmetic, T.normalization_table())  # not the table's gather
    tencrop = _load(fx, "clip0_test_seg3_tencrop_uint8.npz")
    np.testing.assert_array_equal(T.normalize(tencrop).transpose(0, 3, 1, 2),
                                  _load(fx, "clip0_test_seg3_output_float32.npz"))


def test_scale_rounding():
    assert T.scaled_size(320, 180, 256) == (455, 256)
    assert T.scaled_size(144, 176, 256) == (256, 313)
    assert T.scaled_size(340, 256, 256) == (340, 256)
    frames = np.zeros((2, 180, 320, 3), np.uint8)
    assert T.scale(frames, 256).shape == (2, 256, 455, 3)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="uint8 frames"):
        T.scale(np.zeros((2, 10, 10), np.uint8), 8)
    with pytest.raises(ValueError, match="cannot crop 224x224"):
        T.center_crop(np.zeros((1, 100, 300, 3), np.uint8), 224)


def test_ten_crop_on_device_is_bit_identical_to_the_host(fx, frames):
    canvases, sizes, expected = [], [], []
    for clip, idx in (("clip0", [8, 24, 40]), ("clip1", [3, 7, 11]), ("clip2", [2, 5, 8])):
        scaled = T.scale(frames(clip, idx), 256)  # 340x256, 455x256, 256x313
        canvas, hw = T.place_on_canvas(scaled, 456)
        assert canvas.shape == (3, 456, 456, 3) and hw.tolist() == list(scaled.shape[1:3])
        canvases.append(canvas)
        sizes.append(hw)
        expected.append(T.ten_crop(scaled, 224))
    got = jax.jit(lambda f, h: T.ten_crop_on_device(f, h, 224))(np.stack(canvases), np.stack(sizes))
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(got[i]), expected[i])
    np.testing.assert_array_equal(np.asarray(got[0]), _load(fx, "clip0_test_seg3_tencrop_uint8.npz"))


def test_place_on_canvas_crops_ultra_wide_frames():
    frames = np.arange(2 * 10 * 30 * 3, dtype=np.uint8).reshape(2, 10, 30, 3)
    canvas, hw = T.place_on_canvas(frames, 20)
    assert hw.tolist() == [10, 20]
    np.testing.assert_array_equal(canvas[:, :10, :20], frames[:, :, 5:25])
