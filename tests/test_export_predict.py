"""Export with jax.export, then predict on real video files without the model code."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ppsn import checkpoint
from ppsn.data.clips import ClipSpec, load_clip
from ppsn.data.transforms import normalize
from ppsn.models import TSN
from ppsn.predict import Predictor
from ppsn.train import initialize
from tests.conftest import REPO_ROOT

FLAGS = ["--config.data.test_num_seg=2", "--config.data.short_size=40",
         "--config.data.target_size=32"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    variables = jax.tree.map(np.asarray, initialize.scratch_variables(TSN(18, 10), seed=5))
    checkpoint.save_variables(root / "weights", variables, {"depth": 18, "num_classes": 10})
    done = subprocess.run(
        [sys.executable, "-m", "ppsn.export", "--config=configs/pptsn_toy.py",
         f"--weights={root / 'weights'}", f"--output={root / 'inference'}", *FLAGS],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "inference", variables


def test_exported_scores_equal_the_in_process_model(exported, toy_dir):
    model_dir, variables = exported
    predictor = Predictor(str(model_dir))
    assert predictor.meta["views"] == 20 and predictor.meta["num_classes"] == 10
    video = str(toy_dir / "videos" / "test_cool_ring_000.mp4")
    clip = predictor.clip(video)
    # The same clip through the test-mode pipeline:
    np.testing.assert_array_equal(clip, load_clip({"video_path": video}, ClipSpec("test", 2, 40, 32)))
    batch = np.stack([clip, clip[::-1]])  # a symbolic batch of 2
    got = predictor.scores(batch)
    logits = TSN(18, 10).apply(variables, normalize(batch))
    np.testing.assert_allclose(got, jax.nn.softmax(logits, -1), rtol=1e-5, atol=1e-6)


def test_predict_cli_on_files_and_directories_with_bad_files(exported, toy_dir, tmp_path):
    model_dir, _ = exported
    good = toy_dir / "videos" / "test_warm_circle_000.mp4"
    folder = tmp_path / "folder"
    folder.mkdir()
    os.symlink(good, folder / "a.mp4")
    (folder / "b.avi").write_bytes(b"\x00" * 100)  # corrupt
    (folder / "notes.txt").write_text("not a video")
    done = subprocess.run(
        [sys.executable, "-m", "ppsn.predict", f"--input_file={good}",
         f"--input_file={tmp_path / 'missing.mp4'}", f"--input_file={folder}",
         f"--model_dir={model_dir}", f"--label_list={toy_dir / 'label_list.txt'}", "--top_k=3"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1  # some inputs failed, the others ran
    out = done.stdout
    assert out.count("Current video file:") == 2
    assert f"Current video file: {good}" in out and "top-1 class: " in out
    assert "top-1 score: " in out and "top-3 class name: " in out
    errors = done.stderr.strip().splitlines()
    assert any("missing.mp4: missing video file" in e for e in errors)
    assert any("b.avi" in e for e in errors)
    assert "notes.txt" not in done.stdout + done.stderr
