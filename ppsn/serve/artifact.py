"""The files of an exported model directory (``python -m ppsn.export``), for writer and readers.

``model.jax`` (the serialized ``jax.export`` artifact), ``weights.npz`` (its weights, in the
order it takes them), ``model.onnx`` (with ``--onnx``) and ``inference.json`` (what predict
needs: sampling, sizes, mean/std, classes). No jax here: serving hosts read it too.
"""

from __future__ import annotations

import json
import os

MODEL_FILE = "model.jax"
WEIGHTS_FILE = "weights.npz"
META_FILE = "inference.json"
ONNX_FILE = "model.onnx"


def read_meta(model_dir: str) -> dict:
    with open(os.path.join(model_dir, META_FILE)) as f:
        return json.load(f)
