"""python -m ppsn.predict --timeline over a generated long video, on every backend."""

import json

import jax
import numpy as np
import pytest

from ppsn import cli, predict
from ppsn.data import sampling, transforms
from ppsn.export import export_model
from ppsn.models import TSN
from ppsn.recipe import toy_config
from ppsn.serve import timeline
from ppsn.serve.predictor import Predictor
from ppsn.train import initialize
from tests.conftest import require_module
from tests.data import media


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    config = toy_config()
    config.data.test_num_seg, config.data.short_size, config.data.target_size = 3, 40, 32
    variables = jax.tree.map(np.asarray, initialize.scratch_variables(TSN(18, 10), seed=2))
    out = tmp_path_factory.mktemp("timeline") / "inference"
    export_model(config, variables, str(out), platforms=("cpu",), onnx=True)
    return out


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """4 s at 25 fps: four toy classes one after the other, one second each."""
    data = np.concatenate([media.frames(25, 96, 64, seed=s) for s in (1, 4, 7, 2)])
    return media.write_video(tmp_path_factory.mktemp("long") / "long.mp4", "libx264", data)


def test_windows_are_streamed_and_scored_as_clips_of_the_decoded_video(model_dir, long_video,
                                                                        tmp_path):
    predictor = Predictor(str(model_dir))
    out = tmp_path / "timeline.json"
    assert predict.main([f"--input_file={long_video}", f"--model_dir={model_dir}",
                         "--window_seconds=1", "--stride_seconds=0.6", f"--timeline={out}",
                         "--top_k=3"]) == cli.OK
    result = json.loads(out.read_text())
    windows = result["windows"]
    # 100 frames, windows of 25 frames every 15: starts 0, 15, ..., 75
    assert [(w["start_s"], w["end_s"]) for w in windows] == [
        (s / 25, (s + 25) / 25) for s in range(0, 76, 15)]
    decoded = media.decode_all(long_video)
    for w in windows:
        start = round(w["start_s"] * 25)
        frames = decoded[start + sampling.sample_segments(25, 3, predictor.meta["sampling"])]
        clip = transforms.ten_crop(transforms.scale(frames, 40), 32)
        scores = predictor.scores(clip[None])[0]
        assert [c for c, _ in w["top_k"]] == np.argsort(-scores, kind="stable")[:3].tolist()
        np.testing.assert_allclose([s for _, s in w["top_k"]], np.sort(scores)[::-1][:3],
                                   rtol=1e-5)
    assert (tmp_path / "timeline.png").read_bytes()[:4] == b"\x89PNG"


def test_frames_are_held_only_while_a_window_needs_them():
    """Each window's clip comes out as soon as its last sampled frame is read: a 2,000-frame
    video is never read ahead, whatever its length."""
    pulled = []

    def frames():
        for i in range(2000):
            pulled.append(i)
            yield np.full((8, 10, 3), i % 256, np.uint8)

    windows = timeline.plan_windows(2000, 25.0, 2.0, 1.0, 4, "test")
    assert len(windows) == 79
    for window, clip in timeline.window_clips(frames(), windows, 8, 8):
        assert pulled[-1] == window.indices.max()
        assert clip.shape == (40, 8, 8, 3)
        assert clip[:4, 0, 0, 0].tolist() == [int(i) % 256 for i in window.indices]
    assert pulled[-1] == windows[-1].indices.max()  # decoding stops after the last window


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_other_backends_give_the_same_timeline(model_dir, long_video, tmp_path, backend):
    require_module(backend)
    results = []
    for name in ("xla", backend):
        out = tmp_path / f"{name}.json"
        assert predict.main([f"--input_file={long_video}", f"--model_dir={model_dir}",
                             "--window_seconds=2", f"--timeline={out}", f"--backend={name}",
                             "--top_k=2"]) == cli.OK
        results.append(json.loads(out.read_text())["windows"])
    assert len(results[0]) == 2
    for a, b in zip(*results):
        assert a["top_k"][0][0] == b["top_k"][0][0]
        np.testing.assert_allclose(a["top_k"][0][1], b["top_k"][0][1], atol=1e-5)


def test_a_video_shorter_than_a_window_and_bad_flags_are_one_line_errors(
        model_dir, long_video, tmp_path, capsys):
    def error(*argv):
        code = predict.main([f"--model_dir={model_dir}", *argv])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == cli.USAGE and len(lines) == 1, lines
        return lines[0]

    out = f"--timeline={tmp_path / 't.json'}"
    assert error(f"--input_file={long_video}", "--window_seconds=5", out) == (
        f"error: {long_video}: 4.00 s (100 frames at 25 fps) is shorter than one window "
        "(--window_seconds=5)")
    assert error(f"--input_file={long_video}", out).endswith("needs --timeline=OUT.json and "
                                                             "--window_seconds")
    assert "one --input_file" in error(f"--input_file={long_video}",
                                       f"--input_file={long_video}", "--window_seconds=1", out)
    assert "missing video file" in error(f"--input_file={tmp_path / 'no.mp4'}",
                                         "--window_seconds=1", out)
    assert not (tmp_path / "t.json").exists()
