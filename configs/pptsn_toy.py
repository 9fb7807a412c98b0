"""PP-TSN recipe on the embedded toy dataset: a ResNet-18-vd TSN from scratch on 2 CPU cores.

    python -m ppsn.main --config=configs/pptsn_toy.py --workdir=output/toy

Generates the dataset into ``data/toy`` if absent (``python -m ppsn.data.toy``), trains,
validates every epoch and keeps the best model in ``output/toy/best``. Expected: about 98%
validation Top-1 (>= 90% required) in about 3-4 minutes on 2 CPU cores (280 steps of 0.5 s).
"""

from ppsn.recipe import toy_config


def get_config():
    config = toy_config()
    config.lock()
    return config
