"""PaddleVideo list files: parsing them into records, and finding them in a download folder.

A *source* (for Grain: ``__len__`` + ``__getitem__``) yields records, dicts with ``index``
(position in the source), ``video_id`` (str), ``label`` (int) and one of:

* ``frame_dir`` + ``num_frames``: a folder of ``img_{:05}.jpg`` files (PaddleVideo frames list);
* ``video_path``: a video file (PaddleVideo videos list);
* ``jpegs``: a list of JPEG bytes, one per frame (TFDS ``frames`` config, :mod:`ppsn.data.tfds`);
* ``video_bytes``: the encoded video file (TFDS ``videos`` config).

List files are PaddleVideo's: ``frame_dir num_frames label`` per line for frames and
``path label`` for videos, relative to ``data_prefix`` unless absolute. Bad lines (wrong field
count, non-integer numbers, labels outside ``[0, num_classes)``) are not fatal: they are left
out, logged and listed in ``source.skipped`` with the line number and reason. A UTF-8
byte-order mark (Windows editors) is skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from typing import Any

from ppsn import paths

log = logging.getLogger(__name__)

FORMATS = ("frames", "videos")


@dataclasses.dataclass(frozen=True)
class SkippedLine:
    line_number: int
    text: str
    reason: str

    def __str__(self):
        return f"line {self.line_number}: {self.reason}: {self.text!r}"


def parse_list_line(line: str, fmt: str, data_prefix: str, num_classes: int | None
                    ) -> dict[str, Any]:
    """One list-file line -> record (without ``index``). Raises ``ValueError`` with the reason."""
    fields = line.split()
    if fmt == "frames":
        if len(fields) != 3:
            raise ValueError(f"expected 'frame_dir num_frames label', got {len(fields)} fields")
        path, num_frames, label = fields[0], _int(fields[1], "num_frames"), _int(fields[2], "label")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    elif fmt == "videos":
        if len(fields) != 2:
            raise ValueError(f"expected 'path label', got {len(fields)} fields")
        path, label, num_frames = fields[0], _int(fields[1], "label"), None
    else:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if label < 0 or (num_classes is not None and label >= num_classes):
        bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise ValueError(f"label {label} out of range {bound}")
    full = paths.join(data_prefix, path)  # an absolute path (or gs:// URL) stays as it is
    video_id = os.path.splitext(os.path.basename(path.rstrip("/")))[0] if fmt == "videos" else path
    record = {"video_id": video_id, "label": label}
    if fmt == "frames":
        record.update(frame_dir=full, num_frames=num_frames)
    else:
        record.update(video_path=full)
    return record


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what} is not an integer: {text!r}") from None


class ListFileSource:
    """Records of a PaddleVideo list file."""

    def __init__(self, list_file: str, fmt: str, data_prefix: str = "",
                 num_classes: int | None = None):
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        self.list_file = list_file
        self.format = fmt
        self.records: list[dict[str, Any]] = []
        self.skipped: list[SkippedLine] = []
        self.line_numbers: list[int] = []  # the list file's line of each record
        try:
            lines = paths.path(list_file).read_bytes().decode("utf-8-sig").splitlines()
        except FileNotFoundError:
            raise FileNotFoundError(f"list file not found: {list_file}") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{list_file}: not a text list file ({e})") from None
        for number, line in enumerate(lines, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                record = parse_list_line(line, fmt, data_prefix, num_classes)
            except ValueError as e:
                self.skipped.append(SkippedLine(number, line, str(e)))
                log.warning("%s: skipping %s", list_file, self.skipped[-1])
                continue
            record["index"] = len(self.records)
            self.records.append(record)
            self.line_numbers.append(number)
        if self.skipped:
            log.warning("%s: %d bad lines skipped, %d records kept", list_file,
                        len(self.skipped), len(self.records))

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        return self.records[index]

    def fingerprint(self) -> str:
        """sha256 of the list file's bytes: identifies exactly which list was evaluated."""
        return hashlib.sha256(paths.path(self.list_file).read_bytes()).hexdigest()

    def __repr__(self):
        return f"ListFileSource({self.list_file!r}, {self.format!r}, {len(self)} records)"


# ----------------------------------------------------------- finding lists in a download folder

SPLITS = ("train", "val", "test")


def list_format(path: str) -> str:
    """'frames' (three fields per line) or 'videos', from the first entry of a list file."""
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            if line.strip() and not line.lstrip().startswith("#"):
                return "frames" if len(line.split()) == 3 else "videos"
    return "videos"


def find_list_files(folder: str, preferred_format: str) -> dict[str, tuple[str, str]]:
    """``{split: (list file, format)}`` for the PaddleVideo list files in ``folder``.

    Per split it looks for ``{split}_frames.list``, ``{split}_videos.list`` and ``{split}.list``
    (format told by the number of fields), preferring lists of ``preferred_format``."""
    found = {}
    for split in SPLITS:
        candidates = []
        for name in (f"{split}_frames.list", f"{split}_videos.list", f"{split}.list"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                candidates.append((path, list_format(path)))
        if not candidates:
            continue
        preferred = [c for c in candidates if c[1] == preferred_format]
        found[split] = (preferred or candidates)[0]
    return found


def find_label_list(folder: str, *names: str) -> str | None:
    """The first of ``names`` (then ``label_list.txt``) that exists in ``folder``."""
    for name in names + ("label_list.txt",):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None
