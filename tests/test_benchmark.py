import pytest
import json
import subprocess
import sys


def _run(*args):
    result = subprocess.run([sys.executable, "-m", "ppsn.benchmark", *args],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_pipeline_benchmark_prints_a_json_line():
    out = _run("pipeline", "--mode", "train", "--num_clips", "16", "--workers", "0,1")
    assert out["benchmark"] == "pipeline" and out["clips"] >= 16 and out["source"] == "list"
    assert out["batch_shape"] == [8, 3, 224, 224, 3]
    assert set(out["clips_per_s_by_workers"]) == {"0", "1"}
    assert out["clips_per_s"] == out["clips_per_s_by_workers"]["1"] > 0
    assert out["ms_per_clip"] == pytest.approx(1e3 / out["clips_per_s"], rel=0.01)
    # A list file reads the sampled frame files and nothing else.
    assert out["bytes_read_per_clip"] == pytest.approx(out["sampled_bytes_per_clip"], rel=0.05)
    assert out["cpus"] >= 1 and len(out["load_average"]) == 3 and out["cpu_ms_per_clip"] > 0


def test_pipeline_benchmark_tfds_source_reads_only_the_sampled_frames():
    out = _run("pipeline", "--mode", "train", "--source", "tfds", "--num_clips", "8")
    assert out["source"] == "tfds" and out["clips_per_s"] > 0
    assert 0 < out["bytes_read_per_clip"] <= 2 * out["sampled_bytes_per_clip"]
    assert out["bytes_read_per_clip"] < out["video_bytes"] / 20  # 3 of 300 frames


def test_pipeline_benchmark_test_mode_on_long_and_short_gop_videos_with_a_worker():
    out = _run("pipeline", "--mode", "test", "--num_seg", "2", "--num_clips", "2",
               "--batch_size", "1", "--data_format", "videos", "--workers", "1")
    assert out["views_per_clip"] == 20 and out["workers"] == 1 and out["device_crops"]
    assert set(out["ms_per_clip_by_gop"]) == {"250", "12"}
    assert out["ms_per_clip"] == out["ms_per_clip_by_gop"]["250"] > 0


def test_train_step_benchmark_reports_throughput_the_naive_baseline_and_the_kd_overhead():
    out = _run("train_step", "--depth", "18", "--batch", "2", "--num_seg", "2", "--size", "32",
               "--steps", "2", "--teacher_depth", "18")
    assert out["benchmark"] == "train_step" and out["images_per_s"] > 0
    # 'auto' on this CPU: matrix products; the baseline is the naive XLA convolution
    assert (out["conv_impl"], out["precision"], out["baseline"]) == ("matmul", "float32",
                                                                     "conv_impl=xla")
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
    pytest.importorskip("onnxruntime")
    out = _run("predict", "--backend", "onnxruntime", "--depth", "18", "--num_seg", "1",
               "--videos", "1")
    assert out["benchmark"] == "predict" and out["views"] == 10 and out["s_per_video"] > 0
    assert out["s_per_video"] == pytest.approx(
        out["host_s_per_video"] + out["model_s_per_video"], abs=2e-3)
    assert out["baseline"] == "xla:fp32" and out["speedup_vs_baseline"] > 0


def test_loop_benchmark_times_the_real_loop():
    out = _run("loop", "--depth", "18", "--size", "32", "--num_seg", "2", "--batch", "2",
               "--steps", "3", "--warmup", "2")
    assert out["benchmark"] == "loop" and out["steps"] == 3 and out["prefetch_batches"] == 2
    assert out["step_ms"] > 0 and out["host_overhead_ms"] > 0
    assert 0 <= out["input_wait_fraction"] <= 1 and 0 <= out["device_wait_fraction"] <= 1
    assert out["input_wait_fraction"] + out["device_wait_fraction"] < 1


def test_generated_h264_videos_have_the_keyframe_interval_asked_for(tmp_path):
    from ppsn.benchmark import timing
    from ppsn.data.decode import VideoFile

    for gop in (12, 250):
        with VideoFile(timing.h264_video(str(tmp_path), gop)) as video:
            assert video.num_frames == 250
            assert len(video._keyframes) == -(-250 // gop)  # 21 and 1
