"""PP-TSN R50, UCF-101 (split 1), videos format (.avi decoded with PyAV), from the K400 model.

    python -m ppsn.main --config=configs/pptsn_ucf101_videos.py --workdir=output/ppTSN_ucf101_videos

Data: ``data/ucf101/{train,val}.list`` (``path label``). Otherwise as pptsn_ucf101_frames.py.
"""

from ppsn.recipe import ucf101_config, use_video_lists


def get_config():
    config = use_video_lists(ucf101_config(), "data/ucf101")
    config.lock()
    return config
