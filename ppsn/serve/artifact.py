"""The files of an exported model directory (``python -m ppsn.export``), for writer and readers.

``model.jax`` (the serialized ``jax.export`` artifact), ``weights.npz`` (its weights, in the
order it takes them), ``model.onnx`` (with ``--onnx``), ``model_int8.xml`` / ``.bin`` (with
``--int8``) and ``inference.json`` (what predict
needs: sampling, sizes, mean/std, classes). No jax here: serving hosts read it too.
"""

from __future__ import annotations

import json
import os

MODEL_FILE = "model.jax"
WEIGHTS_FILE = "weights.npz"
META_FILE = "inference.json"
ONNX_FILE = "model.onnx"
INT8_FILE = "model_int8.xml"  # OpenVINO IR of the int8 model (with --int8), weights in .bin
INT8_WEIGHTS = "model_int8.bin"


def read_meta(model_dir: str) -> dict:
    with open(os.path.join(model_dir, META_FILE)) as f:
        return json.load(f)


def local_copy(model_dir: str) -> str:
    """``model_dir`` itself when local; an export in a bucket (``gs://...``) is copied once to a
    local temporary directory (the runtimes read local files), whose path is returned."""
    from ppsn import paths

    if not paths.is_remote(model_dir):
        return model_dir
    import atexit
    import shutil
    import tempfile

    source = paths.path(model_dir)
    if not (source / META_FILE).exists():
        raise FileNotFoundError(2, "No such file or directory", f"{model_dir}/{META_FILE}")
    local = tempfile.mkdtemp(prefix="ppsn-model-")
    atexit.register(shutil.rmtree, local, ignore_errors=True)
    for name in (META_FILE, MODEL_FILE, WEIGHTS_FILE, ONNX_FILE, INT8_FILE, INT8_WEIGHTS):
        if (source / name).exists():
            with open(os.path.join(local, name), "wb") as f:
                f.write((source / name).read_bytes())
    return local
