"""int8 post-training quantization of the exported eval graph with OpenVINO's NNCF.

``nncf.quantize`` on the OpenVINO model read from the ONNX graph (:mod:`ppsn.serve.onnx_graph`):
activation ranges are measured on calibration clips (:mod:`ppsn.serve.calibration`), weights
quantized per output channel, FakeQuantize nodes inserted before the convolutions, then the biases
corrected (NNCF's fast bias correction). An activation's range is its minimum and maximum over all
the samples (NNCF's MINMAX), not NNCF's default mean over samples of each sample's extremes, which
clips every view brighter than the average sample of ten views: on the toy (80 test videos) that
default lost 3.75 points of Top-1 (0.9125 vs fp32's 0.950, 77/80 agree, probabilities off by up to
0.22), MINMAX gains 1.25 (0.9625, 79/80 agree, off by 0.017), for 48 s of export instead of 40
(NNCF's HISTOGRAM: 0.950, 78/80, 67 s); full bias correction, SmoothQuant and overflow_fix changed
nothing. R50 fixture: logits within 0.19 (default: 0.20). ``keep`` names the parts left in fp32 (an
NNCF ignored scope): ``stem`` (the three stem convolutions) and ``fc`` (the classifier). The result
is an OpenVINO IR (``model_int8.xml`` + ``.bin``) that OpenVINO runs with int8 convolutions (VNNI
where the CPU has it).

Keeping the stem in fp32 matters: on the R50 fixture quantizing it too moves the logits by 0.27
instead of 0.20 (NNCF's default ranges). Calibration runs the model once per sample with NNCF's
statistics attached, which takes memory growing with the sample's views: R50 with whole clips of
250 views at 224 was killed at 15.9 GB RSS, so samples are ten views of a clip (the exported views
dimension is symbolic; :mod:`ppsn.serve.calibration`). NNCF's ONNX path held every activation in
memory (15.8 GB, killed, at 100 views) and ONNX Runtime on its QDQ graph took 1.55x OpenVINO int8's
time (R50, 10 views), so int8 is OpenVINO only. At 10 views int8 ran 1.81x faster than bf16 and
2.89x than fp32 (2-core AMD EPYC with AVX-512 VNNI and AVX512-BF16, loaded).
"""

from __future__ import annotations

import logging
import os
import shutil

from ppsn.serve import onnx_graph
from ppsn.serve.artifact import INT8_FILE, INT8_WEIGHTS

PARTS = ("stem", "fc")
DEFAULT_KEEP = ("stem",)  # see quantize(): measured on the R50 fixture and the toy
METHOD = "NNCF post-training quantization (MIXED preset, activation ranges min/max over all " \
         "samples, fast bias correction)"  # inference.json's record


def _import_nncf():
    try:
        import nncf
        import openvino
    except ImportError:
        raise ImportError("--int8 needs the 'nncf' and 'openvino' packages: "
                          "pip install 'ppsn[serve]' (or pip install -e '.[serve]')") from None
    return nncf, openvino


def kept_layers(onnx_model, keep) -> list[str]:
    """OpenVINO names of the matrix products (convolutions, fc) that ``keep`` leaves in fp32."""
    unknown = sorted(set(keep) - set(PARTS))
    if unknown:
        raise ValueError(f"cannot keep {unknown} in fp32: choose among {', '.join(PARTS)}")
    names, in_stem = [], True
    for node in onnx_model.graph.node:
        if node.op_type == "Conv" and in_stem and "stem" in keep:
            names.append(node.name)
        if node.op_type == "Gemm" and "fc" in keep:
            names.append(node.name)
        in_stem = in_stem and onnx_graph.STEM not in node.output
    # OpenVINO splits Conv / Gemm + bias into the product '<name>/WithoutBiases' and an Add.
    return [f"{name}/WithoutBiases" for name in names]


def quantize(onnx_model, clips, keep=DEFAULT_KEEP):
    """The int8 ``openvino.Model`` of ``onnx_model`` calibrated on ``clips`` (an iterable with
    ``len``, of samples ``[1, views, size, size, 3]``: with symbolic views, a few views of a
    clip each, :class:`ppsn.serve.calibration.CalibrationClips`)."""
    nncf, ov = _import_nncf()
    nncf.set_log_level(logging.WARNING)  # not a line per layer left unquantized
    model = ov.Core().read_model(onnx_model.SerializeToString())
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    ignored = nncf.IgnoredScope(names=kept_layers(onnx_model, keep))
    minmax = AdvancedQuantizationParameters(
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    return nncf.quantize(model, nncf.Dataset(clips, lambda clip: {"frames": clip}),
                         preset=nncf.QuantizationPreset.MIXED, subset_size=len(clips),
                         ignored_scope=ignored, advanced_parameters=minmax)


def save(model, out) -> None:
    """Writes ``model_int8.xml`` / ``.bin`` into ``out`` (an ``etils.epath.Path``: local or in
    a bucket); the layers kept in fp32 keep fp32 weights (no fp16 compression)."""
    import tempfile

    _, ov = _import_nncf()
    with tempfile.TemporaryDirectory() as local:  # OpenVINO writes local files only
        ov.save_model(model, os.path.join(local, INT8_FILE), compress_to_fp16=False)
        for name in (INT8_FILE, INT8_WEIGHTS):
            with open(os.path.join(local, name), "rb") as f, (out / name).open("wb") as g:
                shutil.copyfileobj(f, g)


def version() -> str:
    nncf, _ = _import_nncf()
    return nncf.__version__
