"""PP-TSN R50, UCF-101 (split 1), videos format (.avi decoded with PyAV), from the K400 model.

    python -m ppsn.main --config=configs/pptsn_ucf101_videos.py --workdir=output/ppTSN_ucf101_videos

Data: ``data/ucf101/{train,val}.list`` (``path label``). Otherwise as pptsn_ucf101_frames.py.
"""

from ppsn.recipe import pptsn_config


def get_config():
    config = pptsn_config()
    config.model.num_classes = 101
    config.data.format = "videos"
    config.data.data_prefix = "data/ucf101"
    config.data.train_list = "data/ucf101/train.list"
    config.data.val_list = "data/ucf101/val.list"
    config.data.test_list = "data/ucf101/val.list"
    config.data.tfds_name = "ucf101"
    config.num_epochs = 50
    config.optim.warmup_epochs = 5
    config.init_from = "checkpoints/ppTSN_k400"
    config.lock()
    return config
