"""int8 export (NNCF post-training quantization, calibrated on the user's clips) and predict
--precision int8 through OpenVINO, at toy size."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from ppsn import checkpoint, predict
from ppsn.export import clip_meta, export_model
from ppsn.models import TSN
from ppsn.recipe import toy_config
from ppsn.serve import backends, calibration, quantize
from ppsn.serve.predictor import Predictor
from ppsn.train import initialize
from tests.conftest import REPO_ROOT, require_module

require_module("nncf")  # the 'serve' extra (installed by '.[test]'; CI: required)
require_module("openvino")

FLAGS = ["--config.data.test_num_seg=2", "--config.data.short_size=40",
         "--config.data.target_size=32"]


def _config(toy_dir):
    config = toy_config()
    config.data.test_num_seg, config.data.short_size, config.data.target_size = 2, 40, 32
    config.data.data_prefix = str(toy_dir)
    config.data.train_list = str(toy_dir / "train_frames.list")
    return config


def _variables(toy_dir, meta):
    """Scratch R18 weights with a classifier that tells the toy's 10 test videos apart by a
    clear margin (scratch weights give near-equal scores, whose order any rounding changes):
    class c's weights are test video c's pooled features minus their mean, scaled so that
    video c scores 10 on its own class."""
    from ppsn.data.transforms import normalize
    from ppsn.serve.predictor import load_clip

    model = TSN(18, 10)
    variables = jax.tree.map(np.asarray, initialize.scratch_variables(model, seed=5))
    records = calibration.read_records(str(toy_dir / "test_videos.list"), None, str(toy_dir), 10)
    clips = np.stack([load_clip(meta, r) for r in records])
    features = np.asarray(model.apply(variables, normalize(clips), method=TSN.features))
    labels = [r["label"] for r in records]
    assert sorted(labels) == list(range(10))
    mean = features.mean(0)
    centred = (features - mean)[np.argsort(labels)]
    kernel = 10 * centred.T / np.sum(centred**2, axis=1)
    variables["params"]["fc"] = {"kernel": kernel.astype(np.float32),
                                 "bias": (-mean @ kernel).astype(np.float32)}
    return variables


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory, toy_dir):
    config = _config(toy_dir)
    records = calibration.read_records(config.data.train_list, "frames", str(toy_dir), 10)
    clips = calibration.CalibrationClips(clip_meta(config), records, 6, config.data.train_list)
    out = tmp_path_factory.mktemp("int8") / "inference"
    meta = export_model(config, _variables(toy_dir, clip_meta(config)), str(out),
                        platforms=("cpu",), calibration=clips)
    return out, meta


def test_int8_export_records_its_calibration_and_keeps_the_stem_in_fp32(int8_export, toy_dir):
    import openvino as ov

    model_dir, meta = int8_export
    assert json.loads((model_dir / "inference.json").read_text()) == meta
    record = meta["int8"]
    assert record["list"] == str(toy_dir / "train_frames.list") and record["clips"] == 6
    assert record["nncf"] == quantize.version() and record["kept_fp32"] == ["stem"]
    assert record["views_per_sample"] == calibration.VIEWS_PER_SAMPLE == 10
    assert meta["onnx"] == "model.onnx" and (model_dir / "model_int8.bin").exists()
    model = ov.Core().read_model(str(model_dir / "model_int8.xml"))
    convs = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    assert len(convs) == 23  # R18-vd: 3 in the stem, 16 in the blocks, 4 projections

    def fp32_weights(conv):  # a kept layer's weights: an f32 Constant; else int8 ones
        weights = conv.input(1).get_source_output().get_node()
        return weights.get_type_name() == "Constant" and weights.get_element_type() == ov.Type.f32

    assert [fp32_weights(c) for c in convs] == [True] * 3 + [False] * 20
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())


def test_activation_ranges_cover_every_calibration_sample(int8_export, toy_dir):
    """An activation quantizer's range is the min / max over all calibration samples (NNCF's
    MINMAX), not NNCF's default mean of each sample's extremes, which clips the views brighter
    than the average sample: on the toy that default lost 3.75 points of Top-1 (quantize.py)."""
    import openvino as ov

    model_dir, _ = int8_export
    core = ov.Core()
    int8 = core.read_model(str(model_dir / "model_int8.xml"))
    fp32 = core.read_model(str(model_dir / "model.onnx"))
    by_name = {op.get_friendly_name(): op for op in fp32.get_ordered_ops()}

    def value(op, i):
        return op.input(i).get_source_output().get_node()

    quantizers = [op for op in int8.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
                  and value(op, 0).get_type_name() != "Constant"]  # activations, not weights
    sources = [op.input(0).get_source_output() for op in quantizers]
    outputs = fp32.add_outputs([by_name[s.get_node().get_friendly_name()].output(s.get_index())
                                for s in sources])
    compiled = core.compile_model(fp32, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    config = _config(toy_dir)
    records = calibration.read_records(config.data.train_list, "frames", str(toy_dir), 10)
    samples = calibration.CalibrationClips(clip_meta(config), records, 6, "x")
    seen = [[compiled({"frames": s})[compiled.output(o.get_any_name())] for o in outputs]
            for s in samples]
    assert len(quantizers) >= 10
    for i, op in enumerate(quantizers):
        low, high = (float(np.min(value(op, k).get_data())) for k in (1, 2))
        lowest = min(float(v[i].min()) for v in seen)
        highest = max(float(v[i].max()) for v in seen)
        tol = 1e-3 * (highest - lowest)
        assert low <= lowest + tol and high >= highest - tol, (op.get_friendly_name(), low, high,
                                                               lowest, highest)


def test_predict_int8_agrees_with_fp32_on_toy_clips(int8_export, toy_dir, capsys):
    from ppsn.serve.predictor import load_clip

    model_dir, _ = int8_export
    int8 = Predictor(str(model_dir), "openvino", "int8")
    fp32 = Predictor(str(model_dir), "openvino", "fp32")
    clips = np.stack([int8.clip(str(toy_dir / "videos" / f"test_{name}_000.mp4"))
                      for name in ("cool_ring", "warm_square")])
    got, expected = int8.scores(clips), fp32.scores(clips)
    assert np.array_equal(got.argmax(-1), expected.argmax(-1))
    np.testing.assert_allclose(got, expected, atol=0.1)
    assert not np.allclose(got, expected, atol=1e-6)  # it is not the fp32 model
    # predict's list Top-1 scores both on the same clips
    code = predict.main([f"--test_list={toy_dir / 'test_videos.list'}",
                         f"--model_dir={model_dir}", "--backend=openvino", "--precision=int8",
                         "--compare=openvino:fp32"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].startswith("openvino:int8 Top-1 ") and out[1].startswith("openvino:fp32 Top-1 ")
    assert "(10 videos of" in out[0]
    assert out[2] == "top-1 agreement openvino:int8 vs openvino:fp32: 1.0000 (10/10)"
    # its Top-1 is test mode's: the label's score ranks first (computed here from the scores)
    records = calibration.read_records(str(toy_dir / "test_videos.list"), None, str(toy_dir), 10)
    scores = fp32.scores(np.stack([load_clip(fp32.meta, r) for r in records]))
    labels = np.array([r["label"] for r in records])
    assert out[1].startswith(f"openvino:fp32 Top-1 {np.mean(scores.argmax(-1) == labels):.4f} ")


def test_int8_is_openvino_only_and_needs_an_int8_export(int8_export, tmp_path):
    model_dir, _ = int8_export
    with pytest.raises(backends.BackendError, match="int8 is OpenVINO only"):
        backends.load(str(model_dir), "onnxruntime", "int8")
    with pytest.raises(backends.BackendError, match="--precision=int8"):
        backends.load(str(model_dir), "xla", "int8")
    (tmp_path / "model.onnx").write_bytes((model_dir / "model.onnx").read_bytes())
    with pytest.raises(backends.BackendError, match="export again .* --int8"):
        backends.load(str(tmp_path), "openvino", "int8")


def test_calibration_feeds_every_view_of_each_clip_a_few_at_a_time(toy_dir):
    """Samples of at most ``views_per_sample`` views (NNCF's statistics hold one sample's
    activations at once: an R50 clip of 250 views took over 16 GB), all views in order."""
    from ppsn.serve.predictor import load_clip

    meta = clip_meta(_config(toy_dir))
    records = calibration.read_records(str(toy_dir / "test_videos.list"), None, str(toy_dir), 10)
    clips = calibration.CalibrationClips(meta, records, 2, "test_videos.list", views_per_sample=3)
    samples = list(clips)
    assert meta["views"] == 20 and len(clips) == len(samples) == 2 * 7
    assert [s.shape[:2] for s in samples[:7]] == [(1, 3)] * 6 + [(1, 2)]
    order = np.random.default_rng(calibration.SEED).permutation(len(records))
    for i, first in enumerate((0, 7)):
        np.testing.assert_array_equal(np.concatenate(samples[first:first + 7], axis=1)[0],
                                      load_clip(meta, records[order[i]]))
    assert len(calibration.CalibrationClips(meta, records, 2, "x")) == 2 * 2  # 10 at a time
    with pytest.raises(calibration.CalibrationError, match="views_per_sample must be >= 1"):
        calibration.CalibrationClips(meta, records, 2, "x", views_per_sample=0)


def test_calibration_lists_that_cannot_give_enough_clips_are_refused(toy_dir, tmp_path):
    meta = clip_meta(_config(toy_dir))
    with pytest.raises(calibration.CalibrationError, match="missing.list: no such list file"):
        calibration.read_records(str(tmp_path / "missing.list"), None, "", 10)
    good = toy_dir / "videos" / "test_cool_ring_000.mp4"
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    listed = tmp_path / "calib.list"
    listed.write_text(f"{good} 0\n{bad} 1\n")
    records = calibration.read_records(str(listed), None, "", 10)
    with pytest.raises(calibration.CalibrationError, match="has 2 usable entries, fewer than "
                       "the 3 clips"):
        calibration.CalibrationClips(meta, records, 3, str(listed))
    # Two entries, one unreadable: found while calibrating, and NNCF passes the error on.
    clips = calibration.CalibrationClips(meta, records, 2, str(listed))
    from ppsn.serve import onnx_graph

    variables = initialize.scratch_variables(TSN(18, 10), seed=5)
    model = onnx_graph.build(variables, 18, None, 32, 32)  # as exported: views symbolic
    with pytest.raises(calibration.CalibrationError, match=r"gives only 1 clips of the 2 asked "
                       r"for \(1 entries unreadable"):
        quantize.quantize(model, clips)


def test_export_cli_refuses_a_short_calibration_list_in_one_line(toy_dir, tmp_path):
    variables = jax.tree.map(np.asarray, initialize.scratch_variables(TSN(18, 10), seed=5))
    checkpoint.save_variables(tmp_path / "weights", variables, {"depth": 18, "num_classes": 10})
    done = subprocess.run(
        [sys.executable, "-m", "ppsn.export", "--config=configs/pptsn_toy.py",
         f"--weights={tmp_path / 'weights'}", f"--output={tmp_path / 'inference'}", "--int8",
         f"--calibration_list={toy_dir / 'train_videos.list'}", "--calibration_size=31",
         f"--config.data.data_prefix={toy_dir}", *FLAGS],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: --calibration_list={toy_dir / 'train_videos.list'} has 30 usable entries, "
        "fewer than the 31 clips --calibration_size asks for (one clip per video)")
    assert not (tmp_path / "inference").exists()


def test_r50_fixture_int8_logits_stay_close_to_paddle_fp32(decompressed, pptsn_fixture_dir,
                                                           record_property):
    """The PaddleVideo R50 fixture (random weights: a chaotic net, margins of 0.02-0.07 between
    the two best logits), calibrated on 16 clips drawn like its inputs: int8 (the stem in fp32)
    stays within 0.25 of PaddleVideo's fp32 logits (measured 0.19, mean 0.050; with NNCF's
    default ranges 0.20, all-int8 0.27, bf16 0.10). Its top-1 is not asserted: those margins
    are below the logit error int8 allows, and which case flips depends on the range estimator
    (min/max: case 0; NNCF's histogram: case 1), while on the trained toy min/max keeps 79/80
    top-1 (quantize.py)."""
    import openvino as ov

    from ppsn.convert.paddle import load_pdparams, to_flax
    from ppsn.serve import onnx_graph

    x = np.load(pptsn_fixture_dir / "caseA_input.npy").transpose(0, 1, 3, 4, 2)
    fp32 = np.load(pptsn_fixture_dir / "caseA_logits.npy")
    model = onnx_graph.build(to_flax(load_pdparams(decompressed["model"]), 50), 50,
                             *x.shape[1:4], "normalized")
    rng = np.random.default_rng(1)
    clips = [np.round(rng.standard_normal((1, *x.shape[1:])) * 32).astype(np.float32) / 32
             for _ in range(16)]
    compiled = ov.Core().compile_model(quantize.quantize(model, clips), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    int8 = np.concatenate([compiled({"frames": x[i:i + 1]})[compiled.output("logits")]
                           for i in range(len(x))])
    diff = np.abs(int8 - fp32)
    record_property("int8_max_logit_diff", float(diff.max()))
    assert diff.max() < 0.25 and diff.mean() < 0.06, (diff.max(), diff.mean())
    agree = np.mean(int8.argmax(-1) == fp32.argmax(-1))
    record_property("int8_top1_agreement", float(agree))


def test_predict_benchmark_times_int8_against_several_baselines():
    import argparse

    from ppsn.benchmark import predict as bench

    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers())
    args = parser.parse_args(["predict", "--precision", "int8", "--depth", "18", "--num_seg", "1",
                              "--videos", "1", "--calibration_size", "1",
                              "--baseline", "openvino:fp32,onnxruntime"])
    out = bench.run(args)
    assert (out["backend"], out["precision"], out["views"]) == ("openvino", "int8", 10)
    assert out["baseline"] == "openvino:fp32" and out["s_per_video"] > 0
    assert out["speedup_vs_baseline"] == round(out["baseline_s_per_video"] / out["s_per_video"], 2)
    (other,) = out["other_baselines"]
    assert (other["backend"], other["precision"]) == ("onnxruntime", "fp32")
    assert other["speedup_vs_baseline"] == round(other["s_per_video"] / out["s_per_video"], 2)
