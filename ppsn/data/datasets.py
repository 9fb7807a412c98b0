"""Sources and clip specs from a config's ``data`` section."""

from __future__ import annotations

import logging
import os

from ppsn.data import synthetic
from ppsn.data.clips import ClipSpec
from ppsn.data.sources import ListFileSource, TfdsSource

log = logging.getLogger(__name__)

_SPLIT_FIELDS = {"train": ("train_list", "train_split"), "valid": ("val_list", "val_split"),
                 "test": ("test_list", "test_split")}


def ensure_toy_data(data_cfg) -> None:
    """Write the embedded toy dataset to ``data_prefix`` when the config asks for it and it is
    absent (a complete copy is kept as is)."""
    if data_cfg.generate_toy and not os.path.exists(
            os.path.join(data_cfg.data_prefix, synthetic.MARKER)):
        log.info("generating the toy dataset in %s", data_cfg.data_prefix)
        synthetic.generate(data_cfg.data_prefix, progress=True)


def make_source(data_cfg, mode: str, num_classes: int):
    """The source for ``mode`` ('train', 'valid' or 'test')."""
    list_field, split_field = _SPLIT_FIELDS[mode]
    if data_cfg.source == "list":
        return ListFileSource(getattr(data_cfg, list_field), data_cfg.format,
                              data_cfg.data_prefix, num_classes)
    if data_cfg.source == "tfds":
        source = TfdsSource(data_cfg.tfds_name, getattr(data_cfg, split_field),
                            data_cfg.tfds_data_dir, data_cfg.format)
        if source.num_classes != num_classes:
            raise ValueError(f"{source!r} has {source.num_classes} classes, the model "
                             f"{num_classes}: set --config.model.num_classes")
        return source
    raise ValueError(f"data.source must be 'list' or 'tfds', got {data_cfg.source!r}")


def clip_spec(data_cfg, mode: str) -> ClipSpec:
    test = mode == "test"
    return ClipSpec(mode=mode, num_seg=data_cfg.test_num_seg if test else data_cfg.num_seg,
                    short_size=data_cfg.short_size, target_size=data_cfg.target_size,
                    sampling=(data_cfg.test_sampling or None) if test else None,
                    device_crops=test and data_cfg.test_crops_on_device,
                    canvas=data_cfg.test_canvas)
