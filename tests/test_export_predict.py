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
from ppsn.serve.predictor import Predictor
from ppsn.train import initialize
from tests.conftest import REPO_ROOT, require_module, skip_unless_cpu_bf16

FLAGS = ["--config.data.test_num_seg=2", "--config.data.short_size=40",
         "--config.data.target_size=32"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    variables = jax.tree.map(np.asarray, initialize.scratch_variables(TSN(18, 10), seed=5))
    checkpoint.save_variables(root / "weights", variables, {"depth": 18, "num_classes": 10})
    done = subprocess.run(
        [sys.executable, "-m", "ppsn.export", "--config=configs/pptsn_toy.py",
         f"--weights={root / 'weights'}", f"--output={root / 'inference'}", "--onnx", *FLAGS],
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


def test_predict_with_nothing_to_classify_or_a_short_label_list_exits_2(exported, toy_dir,
                                                                       tmp_path):
    model_dir, _ = exported
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no videos here")
    done = subprocess.run(
        [sys.executable, "-m", "ppsn.predict", f"--input_file={empty}", f"--model_dir={model_dir}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.splitlines() == [
        f"error: {empty}: no video files in this directory (extensions "
        ".mp4 .avi .webm .mkv .mov .flv .m4v .mpg .mpeg)",
        "error: nothing classified (1 inputs failed)"]

    (tmp_path / "labels.txt").write_text("0 warm_circle\n1 warm_square\n")
    video = toy_dir / "videos" / "test_cool_ring_000.mp4"
    done = subprocess.run(
        [sys.executable, "-m", "ppsn.predict", f"--input_file={video}", f"--model_dir={model_dir}",
         f"--label_list={tmp_path / 'labels.txt'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"error: --label_list={tmp_path / 'labels.txt'} names 2 classes; the "
                           "model has 10 (no name for id 2)\n")


def test_predict_refuses_a_folder_that_is_not_an_export_the_same_way_for_files_and_timelines(
        toy_dir, tmp_path, capsys):
    """One way to open the model: the same one-line error (exit 2) for both commands."""
    from ppsn import predict

    video = str(toy_dir / "videos" / "test_cool_ring_000.mp4")
    expected = (f"error: {tmp_path}: not an exported model (No such file or directory: "
                f"{tmp_path / 'inference.json'})\n")
    for extra in ([], [f"--timeline={tmp_path / 'out.json'}", "--window_seconds=1"]):
        assert predict.main([f"--input_file={video}", f"--model_dir={tmp_path}", *extra]) == 2
        assert capsys.readouterr().err == expected


def test_export_refuses_weights_that_do_not_fit_the_config(tmp_path):
    """Checked before anything is compiled or written: one line, exit 2."""
    variables = jax.tree.map(np.asarray, initialize.scratch_variables(TSN(18, 7), seed=0))
    checkpoint.save_variables(tmp_path / "seven", variables, {"depth": 18, "num_classes": 7})
    done = subprocess.run(
        [sys.executable, "-m", "ppsn.export", "--config=configs/pptsn_toy.py",
         f"--weights={tmp_path / 'seven'}", f"--output={tmp_path / 'inference'}", *FLAGS],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: --weights={tmp_path / 'seven'}: {tmp_path / 'seven'} has 7 classes; the config "
        "has 10 (--config.model.num_classes=7, or other weights)")
    assert not (tmp_path / "inference").exists()


BACKENDS = [("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")]


@pytest.mark.parametrize("backend,precision", BACKENDS)
def test_predict_backends_match_xla_on_a_real_video(exported, toy_dir, backend, precision):
    require_module(backend)
    if precision == "bf16":
        skip_unless_cpu_bf16()
    model_dir, _ = exported
    assert (model_dir / "model.onnx").exists()
    video = str(toy_dir / "videos" / "test_cool_ring_000.mp4")
    xla = Predictor(str(model_dir))
    clip = xla.clip(video)
    batch = np.stack([clip, clip[::-1]])
    expected = xla.scores(batch)
    other = Predictor(str(model_dir), backend, precision)  # a CPU with bf16: must not refuse
    got = other.scores(batch)
    assert got.shape == expected.shape and got.dtype == np.float32
    # fp32: the same numbers; bf16: close probabilities (random weights: flat scores)
    np.testing.assert_allclose(got, expected, atol=1e-5 if precision == "fp32" else 2e-2)
    if precision == "fp32":
        assert np.array_equal(got.argmax(-1), expected.argmax(-1))
    done = subprocess.run(
        [sys.executable, "-m", "ppsn.predict", f"--input_file={video}", f"--model_dir={model_dir}",
         f"--backend={backend}", f"--precision={precision}", "--top_k=2"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "top-2 class: " in done.stdout


_BLOCK_IMPORT = """
import sys
sys.modules[{module!r}] = None  # 'import {module}' now raises ImportError, as if not installed
from ppsn.predict import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_missing_runtime_is_a_one_line_error_naming_the_extra(exported, toy_dir, backend):
    model_dir, _ = exported
    done = subprocess.run(
        [sys.executable, "-c", _BLOCK_IMPORT.format(module=backend),
         f"--input_file={toy_dir / 'videos' / 'test_cool_ring_000.mp4'}",
         f"--model_dir={model_dir}", f"--backend={backend}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "ppsn[serve]" in lines[0] and backend in lines[0], done.stderr


def test_backend_refusals_are_clear(exported, tmp_path):
    from ppsn.serve import backends

    model_dir, _ = exported
    with pytest.raises(backends.BackendError, match="openvino --precision=bf16"):
        backends.load(str(model_dir), "xla", "bf16")
    with pytest.raises(backends.BackendError, match="fp32 only"):
        backends.load(str(model_dir), "onnxruntime", "bf16")
    bare = tmp_path / "no_onnx"
    bare.mkdir()
    (bare / "inference.json").write_text((model_dir / "inference.json").read_text())
    with pytest.raises(backends.BackendError, match="--onnx"):
        backends.load(str(bare), "onnxruntime")


_WITHOUT_JAX = """
import importlib.abc
import sys


class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("jax", "jaxlib", "flax", "optax", "orbax"):
            raise ImportError(f"blocked: {name} imported by a serving host")
        return None


sys.meta_path.insert(0, Blocked())
from ppsn.predict import main
from ppsn.serve.predictor import Predictor

predictor = Predictor(sys.argv[1], "onnxruntime")
print("views", predictor.meta["views"], "scores", predictor.scores(
    predictor.clip(sys.argv[2])[None]).shape)
code = main(["--input_file", sys.argv[2], "--model_dir", sys.argv[1], "--backend", "onnxruntime"])
assert not [m for m in sys.modules if m.split(".")[0] in ("jax", "flax")]
sys.exit(code)
"""


def test_serving_runs_without_jax_or_flax(exported, toy_dir):
    require_module("onnxruntime")
    model_dir, _ = exported
    video = toy_dir / "videos" / "test_cool_ring_000.mp4"
    done = subprocess.run([sys.executable, "-c", _WITHOUT_JAX, str(model_dir), str(video)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "views 20 scores (1, 10)" in done.stdout and "top-1 class:" in done.stdout


def test_export_lowers_for_cpu_cuda_and_tpu_by_default(exported):
    """Each platform with its own convolutions: matrix products on CPU, native ones on GPU/TPU."""
    import json

    from jax import export

    model_dir, _ = exported
    meta = json.loads((model_dir / "inference.json").read_text())
    assert meta["platforms"] == ["cpu", "cuda", "tpu"]
    assert meta["conv_impl"] == {"cpu": "matmul", "cuda": "xla", "tpu": "xla"}
    artifact = export.deserialize(bytearray((model_dir / "model.jax").read_bytes()))
    assert artifact.platforms == ("cpu", "cuda", "tpu")


def test_a_platform_that_cannot_be_lowered_is_an_error_naming_it():
    import jax.numpy as jnp

    from ppsn.export import LoweringError, lower

    def cpu_only(x):  # LAPACK's Schur decomposition has no GPU or TPU lowering
        return jax.lax.linalg.schur(x)[0]

    args = (jax.ShapeDtypeStruct((3, 3), jnp.float32),)
    assert lower(cpu_only, args, ["cpu"]).platforms == ("cpu",)
    with pytest.raises(LoweringError, match=r"cannot lower the model for cuda \(.*; tpu \(") as e:
        lower(cpu_only, args, ["cpu", "cuda", "tpu"])
    assert "cpu (" not in str(e.value)


def test_export_cli_platforms_flag(exported, tmp_path):
    root = exported[0].parent
    base = [sys.executable, "-m", "ppsn.export", "--config=configs/pptsn_toy.py",
            f"--weights={root / 'weights'}", *FLAGS]
    done = subprocess.run(base + [f"--output={tmp_path / 'tpu'}", "--platforms=tpu"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(tpu;" in done.stdout
    done = subprocess.run(base + [f"--output={tmp_path / 'bad'}", "--platforms=cpu,nosuch"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "unknown export platform(s) nosuch" in done.stderr
    assert not (tmp_path / "bad").exists()


def test_export_replaces_only_an_earlier_export_and_atomically(tmp_path):
    """An existing --output is refused; --force replaces an earlier export (no stale files
    left: the new one is written beside it and renamed into place), never anything else."""
    from ppsn.export import export_model
    from ppsn.recipe import toy_config

    config = toy_config()
    config.data.test_num_seg, config.data.short_size, config.data.target_size = 1, 40, 32
    variables = jax.tree.map(np.asarray, initialize.scratch_variables(TSN(18, 10), seed=0))
    out = tmp_path / "inference"
    export_model(config, variables, str(out), platforms=("cpu",), onnx=True)
    assert (out / "model.onnx").exists()
    with pytest.raises(FileExistsError, match="already exists"):
        export_model(config, variables, str(out), platforms=("cpu",))
    export_model(config, variables, str(out), platforms=("cpu",), force=True)
    assert sorted(p.name for p in out.iterdir()) == ["inference.json", "model.jax", "weights.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inference"]  # no sibling left

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(FileExistsError, match="is not a ppsn export"):
        export_model(config, variables, str(mine), platforms=("cpu",), force=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    checkpoint.save_variables(tmp_path / "weights", variables, {"depth": 18, "num_classes": 10})
    done = subprocess.run(
        [sys.executable, "-m", "ppsn.export", "--config=configs/pptsn_toy.py",
         f"--weights={tmp_path / 'weights'}", f"--output={mine}", "--force", *FLAGS],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == (
        f"error: {mine}: is not a ppsn export (no inference.json); refusing to replace it even "
        "with --force (remove it or pick another output)")
