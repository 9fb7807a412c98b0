"""Grain datasets for train / valid / test, and their sources and clip specs from a config.

Sources (``make_source``) are PaddleVideo list files (:mod:`ppsn.data.lists`) or prepared TFDS
splits (:mod:`ppsn.data.tfds`), both yielding the records of :mod:`ppsn.data.lists`. The
datasets are made into batches by :mod:`ppsn.data.loading`; bad samples are logged through
:mod:`ppsn.data.skip_log`.

Every batch is a dict of numpy arrays:

* ``frames``  uint8 ``[B, T, H, W, 3]`` (T = num_seg, or num_seg * 10 for TenCrop);
* ``label``   int32 ``[B]``;
* ``index``   int32 ``[B]``: the record's position in the source (-1 for padding);
* ``mask``    bool ``[B]``: False for padding and for eval samples that failed to decode;
* ``hw``      int32 ``[B, 2]`` (test with ``device_crops``): the scaled frames' height and width
  on their canvas;
* ``replaced`` int32 ``[B]`` (train): how many bad samples were replaced to produce this one;
* ``video_id`` str ``[B]`` (valid / test): the record's ``video_id`` ('' for padding).
* ``skipped`` uint8 ``[B, SKIP_INFO_BYTES]`` (train): which records those were and why (read
  with :func:`ppsn.data.skip_log.consumed_skips`).

Train: the whole source is shuffled per epoch from ``seed`` (Grain's ``shuffle().repeat()``
reshuffles each epoch), each element's randomness (sampling, crop, flip) comes from an rng
derived from ``seed`` and its position in the global stream, and process ``p`` of ``P`` takes
positions ``p, p + P, ...``: no overlap, and the global stream does not depend on ``P``. A bad
sample is replaced by the next record of the source (deterministically) and counted in
``replaced``; the consumer logs it (:func:`ppsn.data.skip_log.log_consumed_skips`), so the skip
log holds the samples the run consumed, never the read-ahead.

Eval (valid / test): no shuffle, nothing dropped or duplicated. The source is padded to a
multiple of ``batch_size * P`` so that every process runs the same number of steps; padding and
samples that cannot be decoded carry ``mask=False`` (the latter are logged and counted).
"""

from __future__ import annotations

import math
from typing import Any

import grain
import numpy as np

from ppsn.data import skip_log as _skips
from ppsn.data.clips import ClipSpec, load_canvas_clip, load_clip, record_name
from ppsn.data.decode import DecodeError
from ppsn.data.lists import ListFileSource

MAX_CONSECUTIVE_BAD = 20
_SPLIT_FIELDS = {"train": ("train_list", "train_split"), "valid": ("val_list", "val_split"),
                 "test": ("test_list", "test_split")}


def make_source(data_cfg, mode: str, num_classes: int):
    """The source of ``mode`` ('train', 'valid' or 'test') that the config's ``data`` names."""
    list_field, split_field = _SPLIT_FIELDS[mode]
    if data_cfg.source == "list":
        return ListFileSource(getattr(data_cfg, list_field), data_cfg.format,
                              data_cfg.data_prefix, num_classes)
    if data_cfg.source == "tfds":
        from ppsn.data.tfds import TfdsSource

        source = TfdsSource(data_cfg.tfds_name, getattr(data_cfg, split_field),
                            data_cfg.tfds_data_dir, data_cfg.format)
        if source.num_classes != num_classes:
            raise ValueError(f"{source!r} has {source.num_classes} classes, the model "
                             f"{num_classes}: set --config.model.num_classes")
        return source
    raise ValueError(f"data.source must be 'list' or 'tfds', got {data_cfg.source!r}")


def clip_spec(data_cfg, mode: str) -> ClipSpec:
    """How ``mode``'s clips are made, from the config's ``data`` section."""
    test = mode == "test"
    return ClipSpec(mode=mode, num_seg=data_cfg.test_num_seg if test else data_cfg.num_seg,
                    short_size=data_cfg.short_size, target_size=data_cfg.target_size,
                    sampling=(data_cfg.test_sampling or None) if test else None,
                    device_crops=test and data_cfg.test_crops_on_device,
                    canvas=data_cfg.test_canvas)


def _process_info(process_index, process_count):
    if process_index is None or process_count is None:
        import jax

        return jax.process_index(), jax.process_count()
    return process_index, process_count


class TrainLoader:
    """``random_map`` callable: record + rng -> example, replacing bad samples (which ones and
    why travel with the example, for the consumer to log)."""

    def __init__(self, source, spec: ClipSpec):
        self.source, self.spec = source, spec

    def __call__(self, record, rng: np.random.Generator) -> dict[str, Any]:
        n = len(self.source)
        skips = []
        for attempt in range(MAX_CONSECUTIVE_BAD):
            try:
                frames = load_clip(record, self.spec, rng)
            except DecodeError as e:
                skips.append([int(record["index"]), str(record.get("video_id", "")), e.path,
                              e.reason])
                record = self.source[(record["index"] + 1) % n]
                continue
            return {"frames": frames, "label": np.int32(record["label"]),
                    "index": np.int32(record["index"]), "mask": np.bool_(True),
                    "replaced": np.int32(attempt), "skipped": _skips.encode_skips(skips)}
        raise RuntimeError(f"{MAX_CONSECUTIVE_BAD} consecutive bad samples ending at "
                           f"{record_name(record)} (last: {skips[-1][3]}): the dataset looks "
                           "broken")


class EvalLoader:
    """``map`` callable over padded positions: position -> example (mask False for padding)."""

    def __init__(self, source, spec: ClipSpec, skip_log: str | None = None):
        self.source, self.spec, self.skip_log = source, spec, skip_log

    def _example(self, frames, hw, index, label, mask, failed, video_id=""):
        example = {"frames": frames, "label": np.int32(label), "index": np.int32(index),
                   "mask": np.bool_(mask), "failed": np.bool_(failed),
                   "video_id": np.str_(video_id)}
        if self.spec.device_crops and self.spec.mode == "test":
            example["hw"] = hw
        return example

    def _empty(self, index: int, label: int, failed: bool, video_id: str = ""):
        hw = np.array([self.spec.short_size, self.spec.short_size], np.int32)
        return self._example(np.zeros(self.spec.shape, np.uint8), hw, index, label, False, failed,
                             video_id)

    def __call__(self, position: int) -> dict[str, Any]:
        if position >= len(self.source):
            return self._empty(-1, -1, False)
        record = self.source[position]
        try:
            if self.spec.device_crops and self.spec.mode == "test":
                frames, hw = load_canvas_clip(record, self.spec)
            else:
                frames, hw = load_clip(record, self.spec), None
        except DecodeError as e:
            _skips.note_bad(self.skip_log, record, e, self.spec.mode)
            return self._empty(record["index"], record["label"], True, record["video_id"])
        return self._example(frames, hw, record["index"], record["label"], True, False,
                             record["video_id"])


def train_dataset(source, spec: ClipSpec, batch_size: int, seed: int, *,
                  num_epochs: int | None = None, process_index: int | None = None,
                  process_count: int | None = None, parts: int = 1) -> grain.MapDataset:
    """This process's batches of the training stream (``batch_size`` is per process), each as
    ``parts`` consecutive elements of ``batch_size / parts`` rows (one per local device, each
    made by one worker: :class:`ppsn.data.loading.BatchIterator` takes them together); the rows
    are the same whatever ``parts``."""
    if batch_size % parts:
        raise ValueError(f"a batch of {batch_size} does not split into {parts} parts")
    if spec.mode != "train":
        raise ValueError(f"train_dataset needs a train ClipSpec, got mode {spec.mode!r}")
    if len(source) == 0:
        raise ValueError(f"{source!r} is empty")
    p, num_p = _process_info(process_index, process_count)
    ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(num_epochs)
    ds = ds.random_map(TrainLoader(source, spec), seed=seed)
    ds = ds[p::num_p]
    return ds.batch(batch_size // parts, drop_remainder=True)


def eval_dataset(source, spec: ClipSpec, batch_size: int, *,
                 process_index: int | None = None, process_count: int | None = None,
                 skip_log: str | None = None) -> grain.MapDataset:
    """This process's padded eval batches; every process gets the same number of batches."""
    p, num_p = _process_info(process_index, process_count)
    per_step = batch_size * num_p
    total = max(1, math.ceil(len(source) / per_step)) * per_step
    ds = grain.MapDataset.range(total)[p::num_p]
    return ds.map(EvalLoader(source, spec, skip_log)).batch(batch_size)

