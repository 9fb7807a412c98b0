"""PP-TSN R50, Kinetics-400, videos format: PaddleVideo's pptsn_k400_videos.yaml.

    python -m ppsn.main --config=configs/pptsn_k400_videos.py --workdir=output/ppTSN_videos

Data: ``data/k400/{train,val}.list`` (``path label``), decoded on the fly with PyAV.
Expected: about the frames-format result (PaddleVideo reports 73.x Top-1 with TenCrop).
"""

from ppsn.recipe import pptsn_config


def get_config():
    config = pptsn_config()
    config.data.format = "videos"
    config.data.train_list = "data/k400/train.list"
    config.data.val_list = "data/k400/val.list"
    config.data.test_list = "data/k400/val.list"
    config.lock()
    return config
