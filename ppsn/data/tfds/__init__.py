"""TFDS datasets of ppsn (ArrayRecord, no TensorFlow needed): builders and the reading source.

``get_builder(name, config, data_dir)`` returns a builder instance; the classes are not
registered with TFDS's global registry (TFDS ships its own, TensorFlow-based ``ucf101``).
``TfdsSource`` reads a prepared split as records for the Grain pipelines.
"""

from __future__ import annotations

from ppsn.data.tfds.kinetics400 import Kinetics400
from ppsn.data.tfds.source import TfdsSource
from ppsn.data.tfds.toy import Toy
from ppsn.data.tfds.ucf101 import Ucf101

BUILDERS = {"kinetics400": Kinetics400, "ucf101": Ucf101, "toy": Toy}


def get_builder(name: str, config: str = "frames", data_dir: str | None = None, **kwargs):
    if name not in BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(BUILDERS)}")
    return BUILDERS[name](config=config, data_dir=data_dir, **kwargs)


__all__ = ["BUILDERS", "get_builder", "Kinetics400", "Ucf101", "Toy", "TfdsSource"]
