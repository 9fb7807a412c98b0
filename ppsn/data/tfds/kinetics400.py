"""Kinetics-400, from files you download yourself (nothing is downloaded at run time).

Put one of these layouts in ``--manual_dir``:

1. **PaddleVideo list files** (what PaddleVideo's K400 configs read): ``train.list`` /
   ``val.list`` with ``path label`` lines for videos, or ``train_frames.list`` /
   ``val_frames.list`` with ``frame_dir num_frames label`` lines for extracted rawframes
   (``img_00001.jpg``, ...), paths relative to the manual dir; optionally
   ``Kinetics-400_label_list.txt`` (``id name`` per line) for class names. PaddleVideo's
   download script ``data/k400/download_k400_data.sh`` and its lists
   (``train_frames.list``/``val_frames.list``) give exactly this.
2. **The official release** (CVDF mirror of the DeepMind Kinetics-400 videos):
   ``annotations/train.csv`` and ``annotations/validate.csv`` (columns ``label, youtube_id,
   time_start, time_end, split``) and the videos under ``train/`` and ``val/`` (any depth,
   e.g. per-class folders), named ``{youtube_id}_{time_start:06d}_{time_end:06d}.mp4``.
   Class ids are the sorted class names (PaddleVideo's label list order). Videos listed in the
   CSV but not downloaded are reported as skipped.

Splits: ``train``, ``val``.
"""

from __future__ import annotations

import csv
import os

from ppsn.data import decode
from ppsn.data.labels import read_label_list
from ppsn.data.lists import find_label_list
from ppsn.data.tfds.base import Entry, Skipped, VideoDataset, entries_from_lists

OFFICIAL = {"train": ("train.csv", ("train", "videos_train")),
            "val": ("validate.csv", ("val", "validate", "videos_val"))}


class Kinetics400(VideoDataset):
    __doc__ = __doc__
    name = "kinetics400"
    NUM_CLASSES = 400
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

    def _class_names(self, manual_dir):
        path = find_label_list(manual_dir, "Kinetics-400_label_list.txt", "kinetics400_label_list.txt")
        if path:
            return read_label_list(path)
        csv_path = os.path.join(manual_dir, "annotations", "train.csv")
        if os.path.isfile(csv_path):
            with open(csv_path, newline="", encoding="utf-8") as f:
                return sorted({row["label"] for row in csv.DictReader(f)})
        return None

    def _split_entries(self, manual_dir):
        if os.path.isdir(os.path.join(manual_dir, "annotations")):
            return self._official_entries(manual_dir)
        return entries_from_lists(manual_dir, self.config, self.NUM_CLASSES,
                                  self.report)

    def _official_entries(self, manual_dir):
        names = self._class_names(manual_dir)
        label_of = {name: i for i, name in enumerate(names)}
        out = {}
        for split, (csv_name, folders) in OFFICIAL.items():
            csv_path = os.path.join(manual_dir, "annotations", csv_name)
            if not os.path.isfile(csv_path):
                continue
            files = {}
            for folder in folders:
                for root, _, names_ in os.walk(os.path.join(manual_dir, folder)):
                    for n in names_:
                        if n.lower().endswith(decode.VIDEO_EXTENSIONS):
                            files[os.path.splitext(n)[0]] = os.path.join(root, n)
            entries = []
            with open(csv_path, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    video_id = f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}"
                    if row["label"] not in label_of:
                        self.report.append(Skipped(split, video_id, csv_path,
                                                   f"unknown class {row['label']!r}"))
                    elif video_id not in files:
                        self.report.append(Skipped(split, video_id, csv_path,
                                                   "missing video file (not downloaded)"))
                    else:
                        entries.append(Entry(video_id, label_of[row["label"]],
                                             video_path=files[video_id]))
            out[split] = entries
        return out
