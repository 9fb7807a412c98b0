"""TFDS builders for ppsn's datasets (ArrayRecord, no TensorFlow needed).

``get_builder(name, config, data_dir)`` returns a builder instance; the classes are not
registered with TFDS's global registry (TFDS ships its own, TensorFlow-based ``ucf101``).
"""

from __future__ import annotations

from ppsn.data.builders.kinetics400 import Kinetics400
from ppsn.data.builders.synthetic import Synthetic
from ppsn.data.builders.ucf101 import Ucf101

BUILDERS = {"kinetics400": Kinetics400, "ucf101": Ucf101, "synthetic": Synthetic}


def get_builder(name: str, config: str = "frames", data_dir: str | None = None, **kwargs):
    if name not in BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(BUILDERS)}")
    return BUILDERS[name](config=config, data_dir=data_dir, **kwargs)


__all__ = ["BUILDERS", "get_builder", "Kinetics400", "Ucf101", "Synthetic"]
