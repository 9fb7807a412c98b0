"""Models: the ResNet-vd backbone and the TSN recognizer.

``ppsn.models.plan`` (the block plan, numpy only) imports without jax or flax, so that the ONNX
builder and the serving code can use it; the Flax modules are imported on first use.
"""

from ppsn.models.plan import STAGE_BLOCKS, feature_dim

_FLAX = {"ResNetVd": "ppsn.models.resnet_vd", "TSN": "ppsn.models.tsn",
         "chunked_logits": "ppsn.models.tsn"}


def __getattr__(name):
    if name in _FLAX:
        import importlib

        return getattr(importlib.import_module(_FLAX[name]), name)
    raise AttributeError(f"module 'ppsn.models' has no attribute {name!r}")


__all__ = ["ResNetVd", "TSN", "STAGE_BLOCKS", "chunked_logits", "feature_dim"]
