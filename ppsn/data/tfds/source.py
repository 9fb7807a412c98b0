"""Records of a prepared split (:mod:`ppsn.data.tfds.writer`'s layout), read without TensorFlow.

A ``frames`` record's ``jpegs`` is a sequence whose items are read on access: a clip reads the
records of its sampled frames only, each straight from its ArrayRecord shard (an ArrayRecord
reader without read-ahead, and only the ``image`` field parsed from the record's
``tf.train.Example``: TFDS's ``as_data_source`` reads about 3x the record and parses every
field). Data prepared by an older ppsn (one record per video) is refused with a message saying
to re-run ``python -m ppsn.data.prepare``.
"""

from __future__ import annotations

import bisect
import os
from typing import Sequence

import numpy as np

from ppsn import paths
from ppsn.data.tfds import writer


def _prepare_command(dataset: str, config: str, data_dir: str) -> str:
    return (f"python -m ppsn.data.prepare --dataset {dataset} --config {config} "
            f"--manual_dir DIR --data_dir {data_dir}")


def _check_prepared(path: str, dataset: str, config: str, data_dir: str) -> None:
    if writer.is_prepared_dataset(path):
        return
    command = _prepare_command(dataset, config, data_dir)
    parent = path.rsplit("/", 1)[0]
    if paths.is_dir(path + writer.INCOMPLETE) or (paths.is_remote(path) and paths.exists(path)):
        raise FileNotFoundError(f"{dataset}/{config} in {data_dir} was not finished (an "
                                f"interrupted prepare left {path + writer.INCOMPLETE}, or an "
                                f"unfinished upload {path}); re-run {command} to resume it")
    older = sorted(v for v in paths.listdir(parent)
                   if v != writer.VERSION and not v.endswith((writer.INCOMPLETE, ".old")))
    if older:
        raise FileNotFoundError(f"{paths.join(parent, older[-1])} was prepared by an older "
                                "ppsn (one record per video: a clip read the whole video); "
                                f"re-run {command}")
    raise FileNotFoundError(f"{dataset}/{config} is not prepared in {data_dir}; run {command}")


class _VideoFrames(Sequence):
    """The encoded frames of one video; item ``i`` is read when asked for."""

    def __init__(self, source: TfdsSource, first: int, count: int):
        self._source, self._first, self._count = source, first, count

    def __len__(self):
        return self._count

    def __getitem__(self, i):
        if not 0 <= i < self._count:
            raise IndexError(i)
        return self._source._image(self._first + i)


class _Records:
    """A split's records by position, over its shards (readers opened on first use, in each
    process)."""

    def __init__(self, files: list[str], lengths: list[int]):
        self.files = files
        self.starts = [0]
        for n in lengths:
            self.starts.append(self.starts[-1] + n)
        self._readers = {}

    def __getstate__(self):
        return dict(self.__dict__, _readers={})

    def read(self, index: int) -> bytes:
        shard = bisect.bisect_right(self.starts, index) - 1
        if not 0 <= index < self.starts[-1]:
            raise IndexError(index)
        reader = self._readers.get(shard)
        if reader is None:
            from array_record.python.array_record_module import ArrayRecordReader

            reader = self._readers[shard] = ArrayRecordReader(self.files[shard],
                                                              "readahead_buffer_size:0")
        return reader.read([index - self.starts[shard]])[0]


def _field(record: bytes, name: str):
    """One field of a serialized ``tf.train.Example`` (bytes, or an int)."""
    from tensorflow_datasets.proto import tf_example_pb2

    feature = tf_example_pb2.Example.FromString(record).features.feature[name]
    return feature.bytes_list.value[0] if feature.bytes_list.value else feature.int64_list.value[0]


class TfdsSource:
    """A prepared split as a source of records (see :mod:`ppsn.data.lists` for the format);
    picklable (each process opens the shards itself)."""

    def __init__(self, dataset: str, split: str, data_dir: str, config: str = "frames"):
        import tensorflow_datasets as tfds

        self.path = writer.dataset_dir(data_dir, dataset, config)
        _check_prepared(self.path, dataset, config, data_dir)
        info = tfds.builder_from_directory(self.path).info
        index = info.metadata["index"]
        if split in info.splits:
            self._records = _Records([os.fspath(f) for f in info.splits[split].filepaths],
                                     list(info.splits[split].shard_lengths))
        if split not in index:
            raise ValueError(f"{self.path} has no split {split!r} (it has {sorted(index)})")
        self.name, self.split, self.format = dataset, split, config
        label = info.features["label"]
        self.num_classes = label.num_classes
        self.class_names = list(label.names)
        self.video_ids = np.asarray(index[split]["video_id"], dtype=object)
        self.labels = np.asarray(index[split]["label"], np.int32)
        self.num_frames = np.asarray(index[split]["num_frames"], np.int64)
        self.first = np.concatenate([[0], np.cumsum(self.num_frames)[:-1]]).astype(np.int64)

    def _image(self, record: int) -> bytes:
        return _field(self._records.read(record), "image")

    def __len__(self):
        return len(self.video_ids)

    def __getitem__(self, index):
        index = int(index)
        record = {"index": index, "video_id": str(self.video_ids[index]),
                  "label": int(self.labels[index]), "num_frames": int(self.num_frames[index])}
        if self.format == "frames":
            record["jpegs"] = _VideoFrames(self, int(self.first[index]), record["num_frames"])
        else:
            record["video_bytes"] = _field(self._records.read(index), "video")
        return record

    def __repr__(self):
        return f"TfdsSource({self.name}/{self.format} {self.split}, {len(self)} videos)"
