"""The embedded toy dataset (``python -m ppsn.data.synthetic``) as a TFDS dataset.

``--manual_dir`` is the folder the generator wrote (it is generated there if absent when run
through ``python -m ppsn.data.prepare --dataset synthetic``). Splits: ``train``, ``val``, ``test``.
"""

from __future__ import annotations

from ppsn.data import synthetic
from ppsn.data.builders.base import VideoDatasetBuilder
from ppsn.data.builders.lists import entries_from_lists, find_label_list
from ppsn.data.labels import read_label_list


class Synthetic(VideoDatasetBuilder, skip_registration=True):
    __doc__ = __doc__
    name = "synthetic"
    NUM_CLASSES = len(synthetic.CLASS_NAMES)
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

    def _class_names(self, manual_dir):
        path = find_label_list(manual_dir)
        return read_label_list(path) if path else list(synthetic.CLASS_NAMES)

    def _split_entries(self, manual_dir):
        return entries_from_lists(manual_dir, self.builder_config.name, self.NUM_CLASSES,
                                  self.report)
