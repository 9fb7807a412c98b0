"""UCF-101, from files you download yourself (nothing is downloaded at run time).

Put one of these layouts in ``--manual_dir``:

1. **The official release** from the UCF CRCV site: the ``UCF101.rar`` archive extracted to
   ``UCF-101/<ClassName>/v_<ClassName>_gXX_cXX.avi`` and the ``UCF101TrainTestSplits-RecognitionTask.zip``
   archive extracted to ``ucfTrainTestlist/`` (``classInd.txt``, ``trainlist0{1,2,3}.txt``,
   ``testlist0{1,2,3}.txt``). The builder keyword ``ucf_split`` (1, 2 or 3; default 1) picks the
   split; ``testlist0k`` becomes the ``val`` split (what PaddleVideo validates on).
2. **PaddleVideo list files**: ``train.list`` / ``val.list`` (``path label``) or
   ``train_frames.list`` / ``val_frames.list`` (``frame_dir num_frames label``), relative to the
   manual dir, as written by PaddleVideo's ``data/ucf101`` scripts; optionally a
   ``label_list.txt`` (``id name``).

Labels are 0-based (``classInd.txt`` is 1-based). Splits: ``train``, ``val``.
"""

from __future__ import annotations

import os

from ppsn.data.labels import read_label_list
from ppsn.data.lists import find_label_list
from ppsn.data.tfds.base import Entry, Skipped, VideoDataset, entries_from_lists

SPLIT_LISTS = "ucfTrainTestlist"


class Ucf101(VideoDataset):
    __doc__ = __doc__
    name = "ucf101"
    NUM_CLASSES = 101
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

    def __init__(self, *, ucf_split: int = 1, **kwargs):
        if ucf_split not in (1, 2, 3):
            raise ValueError(f"ucf_split must be 1, 2 or 3, got {ucf_split}")
        self.ucf_split = ucf_split
        super().__init__(**kwargs)

    def _class_names(self, manual_dir):
        class_ind = os.path.join(manual_dir, SPLIT_LISTS, "classInd.txt")
        if os.path.isfile(class_ind):
            names = {}
            with open(class_ind, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        number, name = line.split()
                        names[int(number) - 1] = name
            return [names[i] for i in range(len(names))]
        path = find_label_list(manual_dir)
        return read_label_list(path) if path else None

    def _split_entries(self, manual_dir):
        if os.path.isdir(os.path.join(manual_dir, SPLIT_LISTS)):
            return self._official_entries(manual_dir)
        return entries_from_lists(manual_dir, self.config, self.NUM_CLASSES,
                                  self.report)

    def _official_entries(self, manual_dir):
        label_of = {name: i for i, name in enumerate(self._class_names(manual_dir))}
        out = {}
        for split, list_name in (("train", f"trainlist0{self.ucf_split}.txt"),
                                 ("val", f"testlist0{self.ucf_split}.txt")):
            list_path = os.path.join(manual_dir, SPLIT_LISTS, list_name)
            if not os.path.isfile(list_path):
                continue
            entries = []
            with open(list_path, encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        continue
                    rel = line.split()[0]
                    class_name = rel.split("/")[0]
                    video_id = os.path.splitext(os.path.basename(rel))[0]
                    path = os.path.join(manual_dir, "UCF-101", rel)
                    if class_name not in label_of:
                        self.report.append(Skipped(split, video_id, list_path,
                                                   f"unknown class {class_name!r}"))
                    elif not os.path.isfile(path):
                        self.report.append(Skipped(split, video_id, path, "missing video file"))
                    else:
                        entries.append(Entry(video_id, label_of[class_name], video_path=path))
            out[split] = entries
        return out
