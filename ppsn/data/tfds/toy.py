"""The embedded toy dataset (``python -m ppsn.data.toy``) as a TFDS dataset.

``--manual_dir`` is the folder the generator wrote (it is generated there if absent when run
through ``python -m ppsn.data.prepare --dataset toy``). Splits: ``train``, ``val``, ``test``.
"""

from __future__ import annotations

from ppsn.data import toy
from ppsn.data.labels import read_label_list
from ppsn.data.lists import find_label_list
from ppsn.data.tfds.base import VideoDataset, entries_from_lists


class Toy(VideoDataset):
    __doc__ = __doc__
    name = "toy"
    NUM_CLASSES = len(toy.CLASS_NAMES)
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

    def _class_names(self, manual_dir):
        path = find_label_list(manual_dir)
        return read_label_list(path) if path else list(toy.CLASS_NAMES)

    def _split_entries(self, manual_dir):
        return entries_from_lists(manual_dir, self.config, self.NUM_CLASSES,
                                  self.report)
