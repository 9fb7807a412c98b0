"""PP-TSN R50, Kinetics-400, frames format: PaddleVideo's pptsn_k400_frames.yaml.

    python -m ppsn.main --config=configs/pptsn_k400_frames.py --workdir=output/ppTSN

Data: ``data/k400/{train,val}_frames.list`` (``frame_dir num_frames label``) under
``data/k400`` (PaddleVideo's layout; see ``python -m ppsn.data.prepare --help`` for TFDS).
Backbone: ImageNet ResNet50_vd converted to ``checkpoints/ResNet50_vd_pretrained``.
Expected: K400 validation Top-1 73.68 with 25-segment TenCrop test (PaddleVideo's model zoo),
100 epochs on 8 GPUs x 32 clips (about 2 days on 8 V100s in PaddleVideo).
"""

from ppsn.recipe import pptsn_config


def get_config():
    config = pptsn_config()
    config.lock()
    return config
