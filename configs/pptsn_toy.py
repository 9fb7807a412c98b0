"""PP-TSN recipe on the embedded toy dataset: a ResNet-18-vd TSN from scratch on 2 CPU cores.

    python -m ppsn.main --config=configs/pptsn_toy.py --workdir=output/toy

Generates the dataset into ``data/toy`` if absent (``python -m ppsn.data.synthetic``), trains,
validates every epoch and keeps the best model in ``output/toy/best``. Expected: about 98%
validation Top-1 (>= 90% required) in about 3-4 minutes on 2 CPU cores (280 steps of 0.5 s).
"""

from ppsn.recipe import pptsn_config


def get_config():
    config = pptsn_config()
    config.model.depth = 18
    config.model.num_classes = 10
    config.data.data_prefix = "data/toy"
    config.data.train_list = "data/toy/train_frames.list"
    config.data.val_list = "data/toy/val_frames.list"
    config.data.test_list = "data/toy/test_frames.list"
    config.data.label_list = "data/toy/label_list.txt"
    config.data.tfds_name = "synthetic"
    config.data.short_size = 64
    config.data.target_size = 56
    config.data.test_num_seg = 5
    config.data.num_workers = 0
    config.data.generate_toy = True
    config.batch_size = 32
    config.valid_batch_size = 40
    config.test_batch_size = 8
    config.num_epochs = 40
    config.optim.base_lr = 0.02
    config.optim.warmup_epochs = 1
    config.optim.warmup_start_lr = 0.002
    # The x5 / x10 fc learning rates are for fine-tuning on a pretrained backbone; from
    # scratch they make the first epochs unstable.
    config.optim.fc_weight_lr_mult = 1.0
    config.optim.fc_bias_lr_mult = 1.0
    config.log_interval = 10
    config.checkpoint_every_steps = 50
    config.pretrained = ""
    config.lock()
    return config
