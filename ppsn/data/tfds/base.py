"""The TFDS builder shared by ppsn's video datasets, written as ArrayRecord without TensorFlow.

Two configs:

* ``frames``: per video, every frame as JPEG bytes (quality 95), resized so that the short
  side is 256 like PaddleVideo's extracted rawframes (frames already at 256 keep their bytes);
* ``videos``: the encoded video file's bytes, decoded at training time.

Features: ``video_id`` (text), ``label`` (class label), ``num_frames`` (int32) and ``frames``
(a sequence of JPEG bytes) or ``video`` (bytes). The features are plain bytes on purpose: TFDS
then needs no TensorFlow to write or read them, and readers decode only the sampled frames.

A file that cannot be read is not fatal: it is left out and listed, with the reason, in
``self.report`` (written by ``python -m ppsn.data.prepare`` beside the dataset).

Subclasses say where the user's manually downloaded files are, by implementing
``_split_entries(manual_dir) -> {split: [Entry, ...]}`` and ``_class_names(manual_dir)``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from ppsn.data import decode, transforms
from ppsn.data.lists import ListFileSource, find_list_files

FRAME_SHORT_SIDE = 256
JPEG_QUALITY = 95


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


def _encode_jpeg(frame: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise decode.DecodeError("<frame>", "JPEG encoding failed")
    return data.tobytes()


def _frames_of_video(path: str) -> list[bytes]:
    with decode.VideoFile(path) as video:
        frames = video.get(range(video.num_frames))
    return [_encode_jpeg(f) for f in transforms.scale(frames, FRAME_SHORT_SIDE)]


def _frames_of_folder(entry: Entry) -> list[bytes]:
    out = []
    for i in range(entry.num_frames):
        try:
            data = decode.read_frame_bytes(entry.frame_dir, i)
        except decode.DecodeError as e:
            raise decode.DecodeError(e.path, f"{e.reason} (list says {entry.num_frames} frames)") from None
        image = decode.decode_jpeg(data, decode.frame_path(entry.frame_dir, i))
        if min(image.shape[:2]) == FRAME_SHORT_SIDE and data[:2] == b"\xff\xd8":
            out.append(data)  # already what we would write: keep the original bytes
        else:
            out.append(_encode_jpeg(transforms.scale(image[None], FRAME_SHORT_SIDE)[0]))
    return out


def convert_entry(entry: Entry, config: str) -> dict:
    """Entry -> TFDS example. Raises ``DecodeError`` for unreadable input."""
    if config == "frames":
        jpegs = _frames_of_video(entry.video_path) if entry.video_path else _frames_of_folder(entry)
        return {"video_id": entry.video_id, "label": entry.label, "num_frames": len(jpegs),
                "frames": jpegs}
    if entry.video_path is None:
        raise decode.DecodeError(entry.path, "the videos config needs video files, got a frame folder")
    with open(entry.video_path, "rb") as f:
        data = f.read()
    with decode.VideoFile(data, name=entry.video_path) as video:
        video.get([video.num_frames - 1])  # the whole file must be decodable
        num_frames = video.num_frames
    return {"video_id": entry.video_id, "label": entry.label, "num_frames": num_frames,
            "video": data}


def _convert_or_error(args):
    entry, config = args
    try:
        return convert_entry(entry, config), None
    except decode.DecodeError as e:
        return None, e.reason
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})"


class VideoDatasetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base class: see the module docstring."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: frames (JPEG bytes) and videos (file bytes) configs."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="frames", description="JPEG frames, short side 256"),
        tfds.core.BuilderConfig(name="videos", description="encoded video file bytes"),
    ]
    DEFAULT_CONFIG_NAME = "frames"

    def __init__(self, *, manual_dir: str | None = None, num_workers: int = 1, **kwargs):
        # Set before TFDS's __init__, which builds the DatasetInfo (class names come from the
        # manual dir when preparing; when reading, TFDS restores them from the prepared data).
        self.manual_dir_path = os.fspath(manual_dir) if manual_dir else None
        self.num_workers = num_workers
        self.report: list[Skipped] = []
        self.written: dict[str, int] = {}
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    # Subclass hooks ---------------------------------------------------------------------
    def _split_entries(self, manual_dir: str) -> dict[str, list[Entry]]:
        raise NotImplementedError

    def _class_names(self, manual_dir: str | None) -> list[str] | None:
        return None

    NUM_CLASSES: int = 0

    # TFDS --------------------------------------------------------------------------------
    def _info(self) -> tfds.core.DatasetInfo:
        names = self._class_names(self.manual_dir_path) if self.manual_dir_path else None
        label = (tfds.features.ClassLabel(names=names) if names
                 else tfds.features.ClassLabel(num_classes=self.NUM_CLASSES))
        features = {
            "video_id": tfds.features.Text(),
            "label": label,
            "num_frames": tfds.features.Scalar(dtype=np.int32),
        }
        if self.builder_config.name == "frames":
            features["frames"] = tfds.features.Sequence(
                tfds.features.Tensor(shape=(), dtype=np.object_))
        else:
            features["video"] = tfds.features.Tensor(shape=(), dtype=np.object_)
        return tfds.core.DatasetInfo(builder=self, description=self.__doc__,
                                     features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        manual_dir = self.manual_dir_path or os.fspath(dl_manager.manual_dir)
        splits = self._split_entries(manual_dir)
        if not any(splits.values()):
            raise FileNotFoundError(f"{manual_dir}: no videos found; see the {type(self).__name__} "
                                    "docstring for what to download and where to put it")
        return {split: self._generate_examples(split, entries)
                for split, entries in splits.items() if entries}

    def _generate_examples(self, split: str, entries: list[Entry]) -> Iterator:
        seen = set()
        unique = []
        for e in entries:
            if e.video_id in seen:
                self.report.append(Skipped(split, e.video_id, e.path, "duplicate video id"))
            else:
                seen.add(e.video_id)
                unique.append(e)
        config = self.builder_config.name
        jobs = [(e, config) for e in unique]
        if self.num_workers > 1:
            pool = concurrent.futures.ProcessPoolExecutor(self.num_workers)
            results = pool.map(_convert_or_error, jobs, chunksize=4)
        else:
            pool, results = None, map(_convert_or_error, jobs)
        try:
            count = 0
            for entry, (example, reason) in zip(unique, results):
                if example is None:
                    self.report.append(Skipped(split, entry.video_id, entry.path, reason))
                    continue
                count += 1
                yield entry.video_id, example
            self.written[split] = count
        finally:
            if pool is not None:
                pool.shutdown()
