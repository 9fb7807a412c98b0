"""PP-TSN recipe on the embedded toy dataset: a ResNet-18-vd TSN from scratch on 2 CPU cores.

    python -m ppsn.main --config=configs/pptsn_toy.py --workdir=output/toy

Generates the dataset into ``data/toy`` if absent (``python -m ppsn.data.toy``), trains,
validates every epoch and keeps the best model in ``output/toy/best``. The recipe adapted to
the toy (``ppsn.recipe.toy_config``: one segment per clip, no mixup, dropout 0.2, 30 epochs of
7 steps). Measured on an otherwise idle 2-core AMD EPYC (AVX2, no AVX-512): 2 min 43 s of wall
time for the whole command (282 s user + sys), best validation Top-1 0.9375 (>= 0.90 from
epoch 23).
"""

from ppsn.recipe import toy_config


def get_config():
    config = toy_config()
    config.lock()
    return config
