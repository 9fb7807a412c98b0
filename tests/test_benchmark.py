"""The benchmarks run production code on what they say they measure: the shapes, counts and
FLOPs they report are checked against facts computed here independently (the recipe's clip
shapes, the model's parameter count, a FLOP count from the block plan), and every time they
report is finite and made of its reported parts. No speed is asserted: speed targets live in
the benchmarks' own figures, not in timed tests."""

import json
import math
import subprocess
import sys

import jax
import numpy as np
import pytest

from ppsn.models import TSN, plan
from tests.conftest import require_module


def _run(*args):
    result = subprocess.run([sys.executable, "-m", "ppsn.benchmark", *args],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _seconds(*values):
    return all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values)


def test_pipeline_benchmark_prints_a_json_line():
    out = _run("pipeline", "--mode", "train", "--num_clips", "16", "--workers", "0,1")
    # The recipe's train clips: 3 segments cropped to 224, in batches of 8.
    assert out["benchmark"] == "pipeline" and out["mode"] == "train" and out["source"] == "list"
    assert out["batch_shape"] == [8, 3, 224, 224, 3] and out["views_per_clip"] == 3
    assert out["clips"] == 16 and not out["device_crops"]  # whole batches, none dropped
    assert set(out["clips_per_s_by_workers"]) == {"0", "1"}
    assert out["clips_per_s"] == out["clips_per_s_by_workers"]["1"]
    assert _seconds(out["ms_per_clip"], out["clips_per_s"], out["cpu_ms_per_clip"])
    assert out["ms_per_clip"] == pytest.approx(1e3 / out["clips_per_s"], rel=0.01)
    # A list file reads the sampled frame files and nothing else.
    assert out["bytes_read_per_clip"] == pytest.approx(out["sampled_bytes_per_clip"], rel=0.05)
    assert out["cpus"] >= 1 and len(out["load_average"]) == 3


def test_pipeline_benchmark_tfds_source_reads_only_the_sampled_frames_and_compares_settings():
    out = _run("pipeline", "--mode", "train", "--source", "tfds", "--num_clips", "8",
               "--workers", "1", "--compare", "handoff=grain,ring")
    assert out["source"] == "tfds" and out["clips_per_s"] > 0
    by_setting = out["clips_per_s_by_setting"]
    assert set(by_setting) == {"handoff=grain", "handoff=ring"}
    assert out["clips_per_s"] == by_setting["handoff=ring"]["1"]  # the last value is reported
    assert out["gain_by_workers"]["1"] == pytest.approx(
        by_setting["handoff=ring"]["1"] / by_setting["handoff=grain"]["1"], rel=0.01)
    assert out["loader"]["handoff"] == "ring"
    assert 0 < out["bytes_read_per_clip"] <= 2 * out["sampled_bytes_per_clip"]
    assert out["bytes_read_per_clip"] < out["video_bytes"] / 20  # 3 of 300 frames


def test_pipeline_benchmark_test_mode_on_long_and_short_gop_videos_with_a_worker():
    out = _run("pipeline", "--mode", "test", "--num_seg", "2", "--num_clips", "2",
               "--batch_size", "1", "--data_format", "videos", "--workers", "1")
    # Test mode hands the device the scaled frames on the 456 canvas; it cuts the 10 views.
    assert out["device_crops"] and out["batch_shape"] == [1, 2, 456, 456, 3]
    assert out["views_per_clip"] == 20 and out["workers"] == 1 and out["clips"] == 2
    assert "h264" in out["data"] and _seconds(out["ms_per_clip"])
    assert set(out["ms_per_clip_by_gop"]) == {"250", "12"}
    assert out["ms_per_clip"] == out["ms_per_clip_by_gop"]["250"]


def _forward_flops(depth: int, images: int, size: int) -> float:
    """Multiply-adds x 2 of every convolution of TSN-``depth`` on ``images`` frames of
    ``size`` x ``size``, from the block plan alone (the classifier is negligible)."""
    def out(n, stride):
        return (n + 2 * (3 // 2) - 3) // stride + 1 if stride > 1 else n

    flops, n, channels = 0.0, size, 3
    for _, features, stride in plan.STEM:
        n = out(n, stride)
        flops += 2 * n * n * channels * features * 9
        channels = features
    n = (n + 2 - 3) // 2 + 1  # max pool
    expansion = 4 if plan.uses_bottleneck(depth) else 1
    for block in plan.blocks(depth):
        m = out(n, block.stride)
        w = block.width
        if expansion == 4:
            convs = [(n, channels, w, 1), (m, w, w, 9), (m, w, 4 * w, 1)]
        else:
            convs = [(m, channels, w, 9), (m, w, w, 9)]
        if block.projection:
            convs.append((m, channels, w * expansion, 1))
        flops += sum(2 * s * s * cin * cout * k for s, cin, cout, k in convs)
        n, channels = m, w * expansion
    return images * flops


@pytest.mark.slow
def test_train_step_benchmark_reports_throughput_the_naive_baseline_and_the_kd_overhead():
    out = _run("train_step", "--depth", "18", "--batch", "2", "--num_seg", "2", "--size", "32",
               "--steps", "2", "--teacher_depth", "18")
    assert (out["benchmark"], out["depth"], out["batch_per_device"], out["num_seg"],
            out["size"], out["precision"]) == ("train_step", 18, 2, 2, 32, "float32")
    # The compiled step is a training step of this model on 2 x 2 frames of 32 px: forward
    # and backward cost about 3 forwards (counted here from the block plan).
    forward = _forward_flops(18, 2 * 2 * out["devices"], 32)
    assert 2.5 < out["flops_per_step"] / forward < 4.0, (out["flops_per_step"], forward)
    # One momentum buffer per parameter (float32) and the schedule's int32 step count: the
    # optimizer state is the model's size, and the frozen kd teacher adds nothing to it.
    params = jax.eval_shape(lambda: TSN(18, 400).init(
        jax.random.key(0), jax.numpy.zeros((1, 1, 32, 32, 3))))["params"]
    param_bytes = sum(4 * int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    assert out["optimizer_state_bytes"] == out["kd_optimizer_state_bytes"] == param_bytes + 4
    assert out["teacher_depth"] == 18
    assert _seconds(out["step_ms"], out["kd_step_ms"], out["images_per_s"],
                    out["naive_images_per_s"], out["compile_s"])
    assert out["kd_step_time_ratio"] == pytest.approx(out["kd_step_ms"] / out["step_ms"], rel=0.01)
    # 'auto' on this CPU: matrix products; the baseline is the naive XLA convolution
    assert (out["conv_impl"], out["baseline"]) == ("matmul", "conv_impl=xla")


def test_eval_benchmark_reports_seconds_per_video():
    out = _run("eval", "--depth", "18", "--num_seg", "2", "--videos", "1")
    assert (out["views"], out["views_per_chunk"], out["videos"]) == (20, 10, 1)  # TenCrop
    host, device, total = out["host_s_per_video"], out["device_s_per_video"], out["s_per_video"]
    assert _seconds(host, device, total) and host < total and device < total


def test_predict_benchmark_reports_seconds_per_video():
    require_module("onnxruntime")
    out = _run("predict", "--backend", "onnxruntime", "--depth", "18", "--num_seg", "1",
               "--videos", "1")
    assert (out["benchmark"], out["backend"], out["precision"]) == ("predict", "onnxruntime",
                                                                    "fp32")
    assert out["views"] == 10 and out["videos"] == 1 and out["baseline"] == "xla:fp32"
    host, model, total = out["host_s_per_video"], out["model_s_per_video"], out["s_per_video"]
    assert _seconds(host, model, total, out["baseline_s_per_video"])
    assert host < total and model < total
    assert total == pytest.approx(host + model, abs=2e-3)


def test_predict_benchmark_times_batchnorm_folding_against_the_unfolded_export():
    out = _run("predict", "--backend", "xla", "--depth", "18", "--num_seg", "1", "--videos", "1",
               "--baseline", "unfolded")
    assert out["backend"] == "xla" and out["baseline"] == "xla:fp32 without BatchNorm folding"
    folded, unfolded = (out["folded_model_s_per_video_median"],
                        out["baseline_model_s_per_video_median"])
    assert _seconds(folded, unfolded, out["model_s_per_video"])
    assert out["model_speedup_vs_baseline"] == pytest.approx(unfolded / folded, rel=0.02)


def test_loop_benchmark_times_the_real_loop():
    out = _run("loop", "--depth", "18", "--size", "32", "--num_seg", "2", "--batch", "2",
               "--steps", "3", "--warmup", "2")
    assert out["benchmark"] == "loop" and out["steps"] == 3 and out["prefetch_batches"] == 2
    assert out["step_ms"] > 0 and out["host_overhead_ms"] > 0
    assert 0 <= out["input_wait_fraction"] <= 1 and 0 <= out["device_wait_fraction"] <= 1
    assert out["input_wait_fraction"] + out["device_wait_fraction"] < 1


def _json(path):
    return json.loads(path.read_text())


@pytest.mark.slow
def test_distill_benchmark_trains_a_teacher_and_pairs_the_students_of_each_seed(toy_dir,
                                                                                 tmp_path):
    """Tiny (R18 at 32 px, 1 epoch, 2 seeds): the reported figures are those of the real runs
    (their best/ metadata), the two arms of a seed differ in distill.mode only, and the
    summaries are the per-seed values' mean / std / min / max."""
    work = tmp_path / "work"
    args = ("distill", "--data", str(toy_dir), "--size", "32", "--batch", "8", "--epochs", "1",
            "--teacher_epochs", "1", "--seeds", "0,3", "--workdir", str(work))
    out = _run(*args)
    assert (out["benchmark"], out["seeds"], out["epochs"], out["teacher_epochs"]) == (
        "distill", [0, 3], 1, 1)
    assert out["size"] == 32 and out["student_depth"] == out["teacher_depth"] == 18
    teacher = _json(work / "teacher" / "best" / "ppsn.json")
    assert 0.0 <= out["teacher_top1"] <= 1.0 and out["teacher_top1"] == teacher["top1"]
    assert (teacher["task"], teacher["epoch"]) == ("plain", 1)
    for which in ("best_top1", "last_top1"):
        arms = out[which]
        for arm in ("alone", "kd", "kd_minus_alone"):
            s = arms[arm]
            values = s["per_seed"]
            assert len(values) == 2
            assert s["mean"] == pytest.approx(np.mean(values), abs=1e-4)
            assert s["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-4)
            assert (s["min"], s["max"]) == (min(values), max(values))
        for a, k, d in zip(arms["alone"]["per_seed"], arms["kd"]["per_seed"],
                           arms["kd_minus_alone"]["per_seed"]):
            assert 0.0 <= a <= 1.0 and 0.0 <= k <= 1.0
            assert d == pytest.approx(k - a, abs=1e-4)
    diffs = out["best_top1"]["kd_minus_alone"]["per_seed"]
    assert out["kd_better_seeds"] == sum(d > 0 for d in diffs)
    assert out["kd_worse_seeds"] == sum(d < 0 for d in diffs)
    for i, seed in enumerate((0, 3)):
        configs = {}
        for arm, task in (("alone", "plain"), ("kd", "kd")):
            run = work / f"seed{seed}" / arm
            best = _json(run / "best" / "ppsn.json")
            assert best["task"] == task and best["epoch"] == 1
            assert best["top1"] == out["best_top1"][arm]["per_seed"][i]
            configs[arm] = _json(run / "config.json")
            assert configs[arm]["seed"] == seed and configs[arm]["num_epochs"] == 1
        assert configs["kd"]["distill"]["mode"] == "kd"
        assert configs["kd"]["distill"]["teacher_checkpoint"] == str(work / "teacher" / "best")
        configs["kd"]["distill"]["mode"] = ""
        assert configs["alone"] == configs["kd"]  # same everything but distill.mode
    assert out["cpu"] and out["wall_s"] >= out["teacher_wall_s"] + sum(
        out["alone_wall_s"]) + sum(out["kd_wall_s"])
    again = subprocess.run([sys.executable, "-m", "ppsn.benchmark", *args],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and str(work / "seed0" / "alone") in again.stderr


def test_generated_h264_videos_have_the_keyframe_interval_asked_for(tmp_path):
    from ppsn.benchmark import timing
    from ppsn.data.decode import VideoFile

    for gop in (12, 250):
        with VideoFile(timing.h264_video(str(tmp_path), gop)) as video:
            assert video.num_frames == 250
            assert len(video._keyframes) == -(-250 // gop)  # 21 and 1
