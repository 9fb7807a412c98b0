import json
import subprocess
import sys

import pytest

from tests.conftest import require_module


def _run(*args):
    result = subprocess.run([sys.executable, "-m", "ppsn.benchmark", *args],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_pipeline_benchmark_prints_a_json_line():
    out = _run("pipeline", "--mode", "train", "--num_clips", "16")
    assert out["benchmark"] == "pipeline" and out["clips"] >= 16
    assert out["batch_shape"] == [8, 3, 224, 224, 3]
    assert out["ms_per_clip"] > 0 and out["clips_per_s_per_worker"] > 0


def test_pipeline_benchmark_test_mode_on_a_video_with_a_worker():
    out = _run("pipeline", "--mode", "test", "--num_seg", "2", "--num_clips", "2",
               "--batch_size", "1", "--data_format", "videos", "--workers", "1")
    assert out["views_per_clip"] == 20 and out["workers"] == 1


def test_train_step_benchmark_reports_throughput_the_naive_baseline_and_the_kd_overhead():
    out = _run("train_step", "--depth", "18", "--batch", "2", "--num_seg", "2", "--size", "32",
               "--steps", "2", "--teacher_depth", "18")
    assert out["benchmark"] == "train_step" and out["images_per_s"] > 0
    assert out["naive_images_per_s"] > 0 and out["speedup_vs_naive"] > 0
    assert out["flops_per_step"] > 0
    assert out["teacher_depth"] == 18 and out["kd_step_ms"] > 0
    assert out["kd_step_time_ratio"] == pytest.approx(out["kd_step_ms"] / out["step_ms"], rel=0.01)
    # The frozen teacher adds no optimizer state.
    assert out["kd_optimizer_state_bytes"] == out["optimizer_state_bytes"] > 0


def test_eval_benchmark_reports_seconds_per_video():
    out = _run("eval", "--depth", "18", "--num_seg", "2", "--videos", "1")
    assert out["views"] == 20 and out["s_per_video"] > 0
    assert out["s_per_video"] == pytest.approx(out["host_s_per_video"] + out["device_s_per_video"], abs=2e-3)


def test_predict_benchmark_reports_seconds_per_video():
    require_module("onnxruntime")
    out = _run("predict", "--backend", "onnxruntime", "--depth", "18", "--num_seg", "1",
               "--videos", "1")
    assert out["benchmark"] == "predict" and out["views"] == 10 and out["s_per_video"] > 0
    assert out["s_per_video"] == pytest.approx(
        out["host_s_per_video"] + out["model_s_per_video"], abs=2e-3)
    assert out["baseline"] == "xla:fp32" and out["speedup_vs_baseline"] > 0
