"""What ppsn's datasets are made of: per split, the videos to prepare (``Entry``) and the class
names, found in the files a user downloaded (``--manual_dir``); nothing is downloaded.

Each dataset (``kinetics400``, ``ucf101``, ``toy``) subclasses :class:`VideoDataset` and says where
the downloaded files are, by implementing ``_split_entries(manual_dir) -> {split: [Entry, ...]}``
and ``_class_names(manual_dir)``. Files that cannot be used (a bad list line, a video listed but
not downloaded, a duplicate id) are not fatal: they are left out and listed, with the reason, in
``dataset.report``. How entries are written is :mod:`ppsn.data.tfds.writer`'s job.
"""

from __future__ import annotations

import dataclasses

from ppsn.data.lists import ListFileSource, find_list_files

CONFIGS = ("frames", "videos")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One video to write: an id, a label, and a video file or a frame folder."""

    video_id: str
    label: int
    video_path: str | None = None
    frame_dir: str | None = None
    num_frames: int | None = None  # for frame folders: as the list file says

    @property
    def path(self) -> str:
        return self.video_path or self.frame_dir


@dataclasses.dataclass(frozen=True)
class Skipped:
    split: str
    video_id: str
    path: str
    reason: str


def entries_from_list(list_file: str, fmt: str, data_prefix: str, num_classes: int | None
                      ) -> tuple[list[Entry], list[Skipped]]:
    """Entries of a PaddleVideo list file; bad lines come back as ``Skipped``."""
    source = ListFileSource(list_file, fmt, data_prefix, num_classes)
    entries = [Entry(r["video_id"], r["label"], video_path=r.get("video_path"),
                     frame_dir=r.get("frame_dir"), num_frames=r.get("num_frames"))
               for r in source.records]
    skipped = [Skipped("?", "", f"{list_file}:{s.line_number}", s.reason) for s in source.skipped]
    return entries, skipped


def entries_from_lists(manual_dir: str, config: str, num_classes: int,
                       report: list[Skipped]) -> dict[str, list[Entry]]:
    """``{split: entries}`` of the PaddleVideo list files in ``manual_dir``; bad lines go to
    ``report``."""
    out = {}
    for split, (path, fmt) in find_list_files(manual_dir, config).items():
        entries, skipped = entries_from_list(path, fmt, manual_dir, num_classes)
        report.extend(Skipped(split, s.video_id, s.path, s.reason) for s in skipped)
        out[split] = entries
    return out


class VideoDataset:
    """Base class: see the module docstring. ``config`` is ``frames`` (every frame as an
    encoded image, one record each) or ``videos`` (the encoded video file, one record)."""

    name: str = ""
    NUM_CLASSES: int = 0
    MANUAL_DOWNLOAD_INSTRUCTIONS: str = ""

    def __init__(self, config: str = "frames"):
        if config not in CONFIGS:
            raise ValueError(f"config must be one of {CONFIGS}, got {config!r}")
        self.config = config
        self.report: list[Skipped] = []

    # Subclass hooks ---------------------------------------------------------------------
    def _split_entries(self, manual_dir: str) -> dict[str, list[Entry]]:
        raise NotImplementedError

    def _class_names(self, manual_dir: str) -> list[str] | None:
        return None

    # -------------------------------------------------------------------------------------
    def class_names(self, manual_dir: str) -> list[str] | None:
        return self._class_names(manual_dir)

    def split_entries(self, manual_dir: str) -> dict[str, list[Entry]]:
        """``{split: entries}`` in the order they are written, duplicates of a video id left
        out (and reported); a folder with no videos at all is an error."""
        splits = self._split_entries(manual_dir)
        if not any(splits.values()):
            raise FileNotFoundError(f"{manual_dir}: no videos found; see the {type(self).__name__} "
                                    "docstring for what to download and where to put it")
        out = {}
        for split, entries in splits.items():
            seen, unique = set(), []
            for e in entries:
                if e.video_id in seen:
                    self.report.append(Skipped(split, e.video_id, e.path, "duplicate video id"))
                else:
                    seen.add(e.video_id)
                    unique.append(e)
            if unique:
                out[split] = unique
        return out
