"""Data sources behind one record format, for Grain (``__len__`` + ``__getitem__``).

A record is a dict with ``index`` (position in the source), ``video_id`` (str), ``label``
(int) and one of:

* ``frame_dir`` + ``num_frames``: a folder of ``img_{:05}.jpg`` files (PaddleVideo frames list);
* ``video_path``: a video file (PaddleVideo videos list);
* ``jpegs``: a list of JPEG bytes, one per frame (TFDS ``frames`` config);
* ``video_bytes``: the encoded video file (TFDS ``videos`` config).

List files are PaddleVideo's: ``frame_dir num_frames label`` per line for frames and
``path label`` for videos, relative to ``data_prefix`` unless absolute. Bad lines (wrong field
count, non-integer numbers, labels outside ``[0, num_classes)``) are not fatal: they are left
out, logged and listed in ``source.skipped`` with the line number and reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from typing import Any

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
    full = path if os.path.isabs(path) else os.path.join(data_prefix, path)
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
        try:
            with open(list_file, encoding="utf-8") as f:
                lines = f.read().splitlines()
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
        if self.skipped:
            log.warning("%s: %d bad lines skipped, %d records kept", list_file,
                        len(self.skipped), len(self.records))

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        return self.records[index]

    def fingerprint(self) -> str:
        """sha256 of the list file's bytes: identifies exactly which list was evaluated."""
        with open(self.list_file, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    def __repr__(self):
        return f"ListFileSource({self.list_file!r}, {self.format!r}, {len(self)} records)"


class TfdsSource:
    """Records of a split written by ppsn's TFDS builders (ArrayRecord, read without TensorFlow)."""

    def __init__(self, dataset: str, split: str, data_dir: str, config: str = "frames"):
        from ppsn.data.builders import get_builder

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
