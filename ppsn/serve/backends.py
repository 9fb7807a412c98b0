"""Runtimes that score TenCrop clips with an exported model: XLA, ONNX Runtime, OpenVINO.

Every backend maps uint8 clips ``[n, views, size, size, 3]`` to float32 class probabilities
``[n, classes]``:

* ``xla``: the ``jax.export`` artifact (``model.jax`` + ``weights.npz``), fp32;
* ``onnxruntime``: ``model.onnx`` on ONNX Runtime's CPU provider, fp32;
* ``openvino``: ``model.onnx`` compiled by OpenVINO for the CPU, fp32 or bf16 (its
  ``INFERENCE_PRECISION_HINT``; bf16 needs AVX512-BF16 or AMX, and is refused otherwise rather
  than silently run in fp32).

ONNX Runtime and OpenVINO are optional (``pip install 'ppsn[serve]'``); a missing one is a
:class:`MissingRuntime` whose message names the extra.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ppsn.export import META_FILE, MODEL_FILE, ONNX_FILE, WEIGHTS_FILE

BACKENDS = ("xla", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16")


class MissingRuntime(ImportError):
    """The runtime of a backend is not installed."""


class BackendError(ValueError):
    """A backend cannot run this model this way (precision, missing ONNX file, CPU support)."""


def read_meta(model_dir: str) -> dict:
    with open(os.path.join(model_dir, META_FILE)) as f:
        return json.load(f)


def _import(module: str, backend: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingRuntime(
            f"--backend={backend} needs the '{module}' package, which is not installed: "
            "pip install 'ppsn[serve]' (or pip install -e '.[serve]' in a checkout)") from None


def _onnx_path(model_dir: str, backend: str) -> str:
    path = os.path.join(model_dir, ONNX_FILE)
    if not os.path.exists(path):
        raise BackendError(f"{model_dir} has no {ONNX_FILE}, which --backend={backend} needs: "
                           "export again with python -m ppsn.export ... --onnx")
    return path


class XlaBackend:
    def __init__(self, model_dir: str, precision: str):
        if precision != "fp32":
            raise BackendError("--backend=xla runs the exported fp32 model; for bf16 on a CPU "
                               "use --backend=openvino --precision=bf16")
        from jax import export

        with open(os.path.join(model_dir, MODEL_FILE), "rb") as f:
            self.exported = export.deserialize(bytearray(f.read()))
        with np.load(os.path.join(model_dir, WEIGHTS_FILE)) as weights:
            self.weights = [weights[k] for k in sorted(weights.files)]

    def scores(self, clips: np.ndarray) -> np.ndarray:
        return np.asarray(self.exported.call(self.weights, clips))


class OnnxRuntimeBackend:
    def __init__(self, model_dir: str, precision: str, threads: int = 0):
        if precision != "fp32":
            raise BackendError("--backend=onnxruntime runs fp32 only; for bf16 use "
                               "--backend=openvino --precision=bf16")
        ort = _import("onnxruntime", "onnxruntime")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(_onnx_path(model_dir, "onnxruntime"), options,
                                            providers=["CPUExecutionProvider"])

    def scores(self, clips: np.ndarray) -> np.ndarray:
        return self.session.run(["scores"], {"frames": np.ascontiguousarray(clips)})[0]


class OpenVinoBackend:
    def __init__(self, model_dir: str, precision: str, threads: int = 0):
        ov = _import("openvino", "openvino")
        core = ov.Core()
        want = {"fp32": "f32", "bf16": "bf16"}[precision]
        expected_type = {"fp32": ov.Type.f32, "bf16": ov.Type.bf16}[precision]
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise BackendError("--precision=bf16: this CPU has no bf16 support (AVX512-BF16 or "
                               "AMX); use --precision=fp32")
        config = {"INFERENCE_PRECISION_HINT": want, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        model = core.read_model(_onnx_path(model_dir, "openvino"))
        self.compiled = core.compile_model(model, "CPU", config)
        got = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        if got != expected_type:
            raise BackendError(f"OpenVINO compiled the model in {got}, not {precision}")
        self.output = self.compiled.output("scores")

    def scores(self, clips: np.ndarray) -> np.ndarray:
        return np.asarray(self.compiled({"frames": np.ascontiguousarray(clips)})[self.output])


def load(model_dir: str, backend: str = "xla", precision: str = "fp32", threads: int = 0):
    """The runner of ``backend`` for the exported model in ``model_dir``."""
    if backend not in BACKENDS:
        raise BackendError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if precision not in PRECISIONS:
        raise BackendError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if backend == "xla":
        return XlaBackend(model_dir, precision)
    if backend == "onnxruntime":
        return OnnxRuntimeBackend(model_dir, precision, threads)
    return OpenVinoBackend(model_dir, precision, threads)
