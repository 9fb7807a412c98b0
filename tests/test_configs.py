"""The configs carry the recipe, load, and refuse misspelled fields."""

import importlib.util

import pytest

from tests.conftest import REPO_ROOT

CONFIGS = sorted(p.stem for p in (REPO_ROOT / "configs").glob("*.py"))  # every config


def load(name):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "python -m ppsn.main --config=configs/" in module.__doc__  # the command to run it
    return module.get_config()


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_are_locked(name):
    config = load(name)
    with pytest.raises(AttributeError):
        config.optim.base_lrr = 0.1


def test_k400_carries_the_recipe():
    c = load("pptsn_k400_frames")
    assert (c.model.depth, c.model.num_classes, c.model.dropout_rate) == (50, 400, 0.4)
    assert c.batch_size == 256 and c.data.num_seg == 3 and c.data.test_num_seg == 25
    o = c.optim
    assert (o.momentum, o.nesterov, o.weight_decay) == (0.9, True, 1e-4)
    assert (o.fc_weight_lr_mult, o.fc_bias_lr_mult) == (5.0, 10.0)
    assert (o.warmup_epochs, o.warmup_start_lr, o.base_lr, c.num_epochs) == (10, 0.005, 0.01, 100)
    assert (c.loss.label_smoothing, c.loss.mixup_alpha) == (0.1, 0.2)
    assert c.pretrained.endswith("ResNet50_vd_pretrained")
    assert (c.data.short_size, c.data.target_size) == (256, 224)
    videos = load("pptsn_k400_videos")
    assert videos.data.format == "videos" and videos.data.train_list.endswith("train.list")


def test_ucf101_configs():
    frames, videos = load("pptsn_ucf101_frames"), load("pptsn_ucf101_videos")
    assert frames.model.num_classes == videos.model.num_classes == 101
    assert frames.data.format == "frames" and videos.data.format == "videos"
    assert frames.init_from == "checkpoints/ppTSN_k400"


def test_distill_configs():
    kd = load("pptsn_k400_frames_distill_r101")
    assert (kd.distill.mode, kd.distill.teacher_depth, kd.model.depth) == ("kd", 101, 50)
    assert kd.distill.teacher_checkpoint and kd.distill.temperature > 0
    toy = load("pptsn_toy_distill")
    assert toy.distill.mode == "kd" and toy.distill.teacher_checkpoint == "output/toy/best"
    assert load("pptsn_k400_frames").distill.mode == ""  # off unless asked for
