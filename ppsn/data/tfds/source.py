"""Records of a split that ppsn's TFDS builders wrote (ArrayRecord, read without TensorFlow)."""

from __future__ import annotations

import os


class TfdsSource:
    """A prepared split as a source of records (see :mod:`ppsn.data.lists` for the format)."""

    def __init__(self, dataset: str, split: str, data_dir: str, config: str = "frames"):
        from ppsn.data.tfds import get_builder

        self.builder = get_builder(dataset, config=config, data_dir=data_dir)
        if not os.path.isdir(self.builder.data_dir):
            raise FileNotFoundError(
                f"{dataset}/{config} is not prepared in {data_dir}; run "
                f"python -m ppsn.data.prepare --dataset {dataset} --manual_dir DIR --data_dir {data_dir}")
        self._source = self.builder.as_data_source(split=split)
        self.format = config
        self.num_classes = self.builder.info.features["label"].num_classes

    def __len__(self):
        return len(self._source)

    def __getitem__(self, index):
        example = self._source[index]
        video_id = example["video_id"]
        record = {
            "index": index,
            "video_id": video_id.decode() if isinstance(video_id, bytes) else str(video_id),
            "label": int(example["label"]),
        }
        if self.format == "frames":
            record["jpegs"] = list(example["frames"])
        else:
            record["video_bytes"] = example["video"]
        return record

    def __repr__(self):
        return f"TfdsSource({self.builder.name}/{self.format}, {len(self)} records)"
