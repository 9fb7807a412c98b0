"""ppsn's datasets as TFDS-readable ArrayRecord files (no TensorFlow needed): what a dataset is
made of (:mod:`~ppsn.data.tfds.base` and one module per dataset), how a video is encoded
(:mod:`~ppsn.data.tfds.encode`), the layout and its writer (:mod:`~ppsn.data.tfds.writer`) and
the reading source (:mod:`~ppsn.data.tfds.source`).

``get_dataset(name, config)`` returns a dataset description; ``python -m ppsn.data.prepare``
writes it; ``TfdsSource`` reads a prepared split as records for the Grain pipelines. The
datasets are not registered with TFDS's global registry (TFDS ships its own, TensorFlow-based
``ucf101``).
"""

from __future__ import annotations

from ppsn.data.tfds.kinetics400 import Kinetics400
from ppsn.data.tfds.source import TfdsSource
from ppsn.data.tfds.toy import Toy
from ppsn.data.tfds.ucf101 import Ucf101

DATASETS = {"kinetics400": Kinetics400, "ucf101": Ucf101, "toy": Toy}


def get_dataset(name: str, config: str = "frames", **kwargs):
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name](config=config, **kwargs)


__all__ = ["DATASETS", "get_dataset", "Kinetics400", "Ucf101", "Toy", "TfdsSource"]
