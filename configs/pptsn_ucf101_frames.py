"""PP-TSN R50, UCF-101 (split 1), frames format, fine-tuned from the K400 model.

    python -m ppsn.main --config=configs/pptsn_ucf101_frames.py --workdir=output/ppTSN_ucf101

Data: ``data/ucf101/{train,val}_frames.list`` under ``data/ucf101`` (or prepare the TFDS
dataset with ``python -m ppsn.data.prepare --dataset ucf101 ...`` and set
``--config.data.source=tfds --config.data.tfds_data_dir=...``). Initialization: the K400 PP-TSN
checkpoint converted to ``checkpoints/ppTSN_k400`` (its 400-class head is replaced).
Expected: about 90+% Top-1 on split 1 with TenCrop (not published by PaddleVideo for PP-TSN).
"""

from ppsn.recipe import ucf101_config


def get_config():
    config = ucf101_config()
    config.lock()
    return config
