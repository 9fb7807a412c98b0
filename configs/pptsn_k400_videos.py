"""PP-TSN R50, Kinetics-400, videos format: PaddleVideo's pptsn_k400_videos.yaml.

    python -m ppsn.main --config=configs/pptsn_k400_videos.py --workdir=output/ppTSN_videos

Data: ``data/k400/{train,val}.list`` (``path label``), decoded on the fly with PyAV.
Expected: about the frames-format result (PaddleVideo reports 73.x Top-1 with TenCrop).
"""

from ppsn.recipe import pptsn_config, use_video_lists


def get_config():
    config = use_video_lists(pptsn_config(), "data/k400")
    config.lock()
    return config
