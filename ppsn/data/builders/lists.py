"""Finding PaddleVideo list files and label lists in a manual download folder."""

from __future__ import annotations

import os

from ppsn.data.builders.base import Entry, Skipped, entries_from_list

SPLITS = ("train", "val", "test")


def _list_format(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.lstrip().startswith("#"):
                return "frames" if len(line.split()) == 3 else "videos"
    return "videos"


def find_list_files(manual_dir: str, config: str) -> dict[str, tuple[str, str]]:
    """``{split: (list file, format)}`` for the PaddleVideo list files present.

    Per split it looks for ``{split}_frames.list``, ``{split}_videos.list`` and ``{split}.list``
    (format told by the number of fields); the ``frames`` config prefers frame lists, the
    ``videos`` config video lists."""
    found = {}
    for split in SPLITS:
        candidates = []
        for name in (f"{split}_frames.list", f"{split}_videos.list", f"{split}.list"):
            path = os.path.join(manual_dir, name)
            if os.path.isfile(path):
                candidates.append((path, _list_format(path)))
        if not candidates:
            continue
        preferred = [c for c in candidates if c[1] == config]
        found[split] = (preferred or candidates)[0]
    return found


def entries_from_lists(manual_dir: str, config: str, num_classes: int,
                       report: list[Skipped]) -> dict[str, list[Entry]]:
    out = {}
    for split, (path, fmt) in find_list_files(manual_dir, config).items():
        entries, skipped = entries_from_list(path, fmt, manual_dir, num_classes)
        report.extend(Skipped(split, s.video_id, s.path, s.reason) for s in skipped)
        out[split] = entries
    return out


def find_label_list(manual_dir: str, *names: str) -> str | None:
    for name in names + ("label_list.txt",):
        path = os.path.join(manual_dir, name)
        if os.path.isfile(path):
            return path
    return None
