"""Runtimes that score TenCrop clips with an exported model: XLA, ONNX Runtime, OpenVINO.

Every backend maps uint8 clips ``[n, views, size, size, 3]`` to float32 class probabilities
``[n, classes]``:

* ``xla``: the ``jax.export`` artifact (``model.jax`` + ``weights.npz``), fp32;
* ``onnxruntime``: ``model.onnx`` on ONNX Runtime's CPU provider, fp32;
* ``openvino``: ``model.onnx`` compiled by OpenVINO for the CPU, fp32 or bf16 (its
  ``INFERENCE_PRECISION_HINT``, with the stem kept in fp32; bf16 needs AVX512-BF16 or AMX, and
  is refused otherwise rather than silently run in fp32), or ``model_int8.xml`` (``export
  --int8``: int8 convolutions, the rest in fp32).

int8 is OpenVINO only: ONNX Runtime on NNCF's QDQ graph of the same R50 took 1.55x OpenVINO
int8's time (10 views, median of 3 paired runs; README, CPU serving), and NNCF's ONNX-backend
calibration held every activation in memory (killed at 15.8 GB for 100 views at 224), so it is
refused with one line.

ONNX Runtime and OpenVINO are optional (``pip install 'ppsn[serve]'``); a missing one is a
:class:`MissingRuntime` whose message names the extra.
"""

from __future__ import annotations

import os

import numpy as np

from ppsn.serve import onnx_graph
from ppsn.serve.artifact import INT8_FILE, MODEL_FILE, ONNX_FILE, WEIGHTS_FILE

BACKENDS = ("xla", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")


class MissingRuntime(ImportError):
    """The runtime of a backend is not installed."""


class BackendError(ValueError):
    """A backend cannot run this model this way (precision, missing ONNX file, CPU support)."""


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
            raise BackendError(f"--backend=xla runs the exported fp32 model; for {precision} on "
                               f"a CPU use --backend=openvino --precision={precision}")
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
            raise BackendError(f"--backend=onnxruntime runs fp32 only; {precision} is OpenVINO "
                               f"only: use --backend=openvino --precision={precision}")
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
    """OpenVINO on the CPU. ``bf16`` runs the stem (the three stem convolutions and the max
    pool, ~8% of the FLOPs) in fp32 and the rest in bf16: rounding the first activations to
    bf16 is what moves the logits most (on the R50 fixture, all-bf16 moves them by up to 0.126,
    bf16 after an fp32 stem by 0.103 (case A) / 0.045 (case B), keeping every fp32 top-1)."""

    def __init__(self, model_dir: str, precision: str, threads: int = 0, output="scores"):
        if precision == "int8":
            self._build_int8(_int8_path(model_dir), threads, output)
            return
        onnx = _import("onnx", "openvino")
        self._build(onnx.load(_onnx_path(model_dir, "openvino")), precision, threads, output)

    def _build_int8(self, path, threads, output):
        """The NNCF-quantized IR: int8 where it has FakeQuantize nodes, fp32 elsewhere."""
        ov = _import("openvino", "openvino")
        core = ov.Core()
        self.stages = [self._compile(ov, core, core.read_model(path), ov.Type.f32, threads)]
        self.output = self.stages[-1].output(output)

    @classmethod
    def from_onnx(cls, model, precision: str, threads: int = 0, output="scores"):
        """A runner for an in-memory ONNX ``ModelProto`` (e.g. ``onnx_graph.build(...)``)."""
        runner = cls.__new__(cls)
        runner._build(model, precision, threads, output)
        return runner

    def _build(self, model, precision, threads, output):
        ov = _import("openvino", "openvino")
        core = ov.Core()
        if precision not in PRECISIONS:
            raise BackendError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise BackendError("--precision=bf16: this CPU has no bf16 support (AVX512-BF16 or "
                               "AMX); use --precision=fp32")
        if precision == "fp32":
            parts = [(model, ov.Type.f32)]
        else:
            stem, body = onnx_graph.split_at_stem(model)
            parts = [(stem, ov.Type.f32), (body, ov.Type.bf16)]
        self.stages = [self._compile(ov, core, core.read_model(m.SerializeToString()), t, threads)
                       for m, t in parts]
        self.output = self.stages[-1].output(output)

    @staticmethod
    def _compile(ov, core, model, precision, threads):
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(model, "CPU", config)
        got = compiled.get_property("INFERENCE_PRECISION_HINT")
        if got != precision:
            raise BackendError(f"OpenVINO compiled the model in {got}, not {precision}")
        return compiled

    def scores(self, clips: np.ndarray) -> np.ndarray:
        if len(self.stages) == 1:
            return np.asarray(self.stages[0]({"frames": np.ascontiguousarray(clips)})[self.output])
        stem = self.stages[0]({"frames": np.ascontiguousarray(clips)})
        return np.asarray(self.stages[1](
            {name: stem[self.stages[0].output(name)] for name in (onnx_graph.STEM,
                                                                  onnx_graph.CLIP_SHAPE)}
        )[self.output])


def _int8_path(model_dir: str) -> str:
    path = os.path.join(model_dir, INT8_FILE)
    if not os.path.exists(path):
        raise BackendError(f"{model_dir} has no {INT8_FILE}, which --precision=int8 needs: "
                           "export again with python -m ppsn.export ... --int8")
    return path


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
