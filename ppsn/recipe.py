"""The PP-TSN recipe as one default ml_collections config; ``configs/*.py`` override a few fields.

Every value here is PaddleVideo's ``configs/recognition/pptsn/pptsn_k400_frames.yaml`` (see
``shared/docs/RECIPE.md``). Durations are in epochs; they become steps in one place, the loop,
from the size of the training list and the global batch.
"""

from __future__ import annotations

import ml_collections


def pptsn_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(dict(
        depth=50, num_classes=400, dropout_rate=0.4,
        conv_impl="auto",         # 'auto' (matmul on CPU, xla on GPU/TPU), 'matmul', 'im2col',
                                  # 'xla': see ppsn.backend and ppsn.models.conv
        sync_bn=True,             # BatchNorm statistics over the global batch (False: per
                                  # device, as plain BatchNorm in PaddleVideo's multi-GPU runs)
    ))
    c.data = ml_collections.ConfigDict(dict(
        source="list",            # 'list': PaddleVideo list files; 'tfds': ppsn.data.prepare output
        format="frames",          # 'frames' (img_{:05}.jpg folders / JPEG records) or 'videos'
        data_prefix="data/k400",  # prefix of the list files' relative paths
        train_list="data/k400/train_frames.list",
        val_list="data/k400/val_frames.list",
        test_list="data/k400/val_frames.list",
        label_list="",            # 'id name' per line, for reports
        tfds_name="kinetics400",
        tfds_data_dir="",
        train_split="train",
        val_split="val",
        test_split="val",
        num_seg=3,                # segments in training and validation
        test_num_seg=25,          # segments at test time (x 10 TenCrop views)
        test_sampling="",         # '' = PaddleVideo's middle-of-segment; 'linspace' possible
        test_crops_on_device=True,  # TenCrop cut by the device from the scaled uint8 frames
        test_canvas=456,          # canvas side for those frames (16:9 at 256 is 455 wide)
        # TenCrop views per model call: None = per backend (10 per video at a time on CPU; all
        # views of the per-device batch at once on GPU/TPU); 0 = all at once; N = N per video.
        test_views_per_chunk=ml_collections.config_dict.placeholder(int),
        short_size=256,
        target_size=224,
        # Loading (ppsn.data.loading.loader_settings; -1: derived from the CPUs this process
        # may use, $PPSN_CPUS as the launchers set it, else its CPU affinity).
        num_workers=-1,           # worker processes per process (-1: 5 per accelerator, CPUs - 1 on a CPU-only run, capped by CPUs - 1 and read_ahead_mb; 0: main process)
        read_ahead_mb=-1,         # bound on the batches read ahead (-1: 1/8 of this process's share of host memory, at most 8192)
        worker_buffer_size=-1,    # finished batches each worker keeps (-1: 1)
        prefetch_batches=-1,      # batches each producer computes ahead (-1: 2 without workers, 0 in workers)
        decode_threads=-1,        # OpenCV / FFmpeg threads in each worker (-1: 1)
        retain_freed_mb=-1,       # freed memory kept by processes making/taking batches (-1: 64; 0: libc's)
        handoff="ring",           # worker -> main: a shared-memory ring per worker, or 'grain'
        generate_toy=False,       # write the embedded toy dataset to data_prefix if absent
        # Fraction of a list file's lines that may be unusable (bad fields, label out of range)
        # and skipped: above it a run refuses to start (ppsn.preflight).
        max_skipped_lines=0.01,
    ))
    c.batch_size = 256            # global: PaddleVideo's 32 per GPU x 8 GPUs
    c.valid_batch_size = 256      # global: 32 per GPU x 8
    c.test_batch_per_device = 1   # videos per device (global: x the device count); each video
                                  # is scored exactly once whatever the split
    c.num_epochs = 100
    c.optim = ml_collections.ConfigDict(dict(
        momentum=0.9, nesterov=True,
        weight_decay=1e-4,        # coupled L2 on conv weights and the fc weight only
        fc_weight_lr_mult=5.0, fc_bias_lr_mult=10.0,
        base_lr=0.01,             # cosine: base * (cos(pi e / num_epochs) + 1) / 2
        warmup_epochs=10, warmup_start_lr=0.005,
    ))
    c.loss = ml_collections.ConfigDict(dict(label_smoothing=0.1, mixup_alpha=0.2))
    # Knowledge distillation (ppsn.train.tasks). mode '': off; 'kd': a frozen teacher
    # (teacher_checkpoint required); 'dml': student and teacher learn from each other (the
    # teacher starts from teacher_checkpoint if set, else from scratch).
    c.distill = ml_collections.ConfigDict(dict(
        mode="", teacher_depth=101, teacher_checkpoint="", temperature=4.0, weight=1.0))
    # 'auto': bf16 compute on GPU/TPU, float32 on CPU; True / False force it. Parameters,
    # batch statistics and optimizer state are float32 in every case.
    c.amp = "auto"
    c.seed = 0
    c.log_interval = 20           # steps
    c.validate = True             # validate during training and keep the best model
    c.val_interval = 1            # epochs
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    c.max_steps = -1              # stop early after this many steps (-1: the whole schedule)
    # JAX's persistent compilation cache ('' = $JAX_COMPILATION_CACHE_DIR if set, else
    # WORKDIR/compilation_cache; 'none' = off): a
    # restarted or repeated run loads its compiled programs instead of compiling them again.
    c.compilation_cache_dir = ""
    # Backbone initialization: a ppsn checkpoint converted from PaddleClas's ImageNet
    # ResNet50_vd_pretrained.pdparams with
    #   python -m ppsn.convert.paddle --pdparams ResNet50_vd_pretrained.pdparams --depth 50 \
    #       --output checkpoints/ResNet50_vd_pretrained
    c.pretrained = "checkpoints/ResNet50_vd_pretrained"
    # Full-model initialization for fine-tuning (a converted PaddleVideo checkpoint or a ppsn
    # best/ directory); takes precedence over `pretrained`. Resuming from the workdir comes first.
    c.init_from = ""
    return c


def _fields(config, prefix: str = "") -> list[str]:
    out = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.extend(_fields(value, f"{prefix}{key}."))
        else:
            out.append(f"{prefix}{key}")
    return out


def unknown_field(config: ml_collections.ConfigDict) -> str | None:
    """None if every field of ``config`` is one of the recipe's (:func:`pptsn_config`), else a
    line naming the first other one and the recipe's closest name (a config file's
    ``get_config()`` can add fields before the config is locked: a misspelling would be a
    silently ignored new field)."""
    import difflib

    known = _fields(pptsn_config())
    for field in _fields(config):
        if field not in known:
            close = difflib.get_close_matches(field, known, n=1)
            return (f"{field} is not a field of the recipe (ppsn/recipe.py)"
                    + (f"; did you mean {close[0]}?" if close else ""))
    return None


def ucf101_config() -> ml_collections.ConfigDict:
    """The recipe fine-tuned on UCF-101 split 1 from the converted K400 PP-TSN model."""
    c = pptsn_config()
    c.model.num_classes = 101
    c.data.data_prefix = "data/ucf101"
    c.data.train_list = "data/ucf101/train_frames.list"
    c.data.val_list = "data/ucf101/val_frames.list"
    c.data.test_list = "data/ucf101/val_frames.list"
    c.data.tfds_name = "ucf101"
    c.num_epochs = 50
    c.optim.warmup_epochs = 5
    c.init_from = "checkpoints/ppTSN_k400"
    return c


def use_video_lists(c: ml_collections.ConfigDict, prefix: str) -> ml_collections.ConfigDict:
    """Switch a frames config to PaddleVideo's video lists ``{prefix}/{train,val}.list``."""
    c.data.format = "videos"
    c.data.train_list = f"{prefix}/train.list"
    c.data.val_list = f"{prefix}/val.list"
    c.data.test_list = f"{prefix}/val.list"
    return c


def toy_config() -> ml_collections.ConfigDict:
    """The toy recipe (``configs/pptsn_toy.py``): R18-vd from scratch on the embedded toy data.

    Chosen to learn in minutes on 2 CPU cores: one segment per clip (a toy video's frames show
    the same shape, so PP-TSN's 3 segments cost 2.5x per epoch for little), no mixup and
    dropout 0.2 (the recipe's regularization is for fine-tuning a pretrained backbone on K400;
    from scratch on 240 videos it slows fitting), 30 epochs."""
    config = pptsn_config()
    config.model.depth = 18
    config.model.num_classes = 10
    config.model.dropout_rate = 0.2
    config.data.data_prefix = "data/toy"
    config.data.train_list = "data/toy/train_frames.list"
    config.data.val_list = "data/toy/val_frames.list"
    config.data.test_list = "data/toy/test_frames.list"
    config.data.label_list = "data/toy/label_list.txt"
    config.data.tfds_name = "toy"
    config.data.short_size = 64
    config.data.target_size = 56
    config.data.num_seg = 1
    config.data.test_num_seg = 5
    config.data.num_workers = 0
    config.data.generate_toy = True
    config.batch_size = 32
    config.valid_batch_size = 40
    config.test_batch_per_device = 8
    config.num_epochs = 30
    config.loss.mixup_alpha = 0.0
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
    return config
