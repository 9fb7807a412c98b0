"""The bad-sample (skipped-sample) log: which records were skipped and why.

A train example carries the records replaced to make it in ``skipped`` (:func:`encode_skips`,
read back with :func:`consumed_skips`); the consumer logs those of the batches it consumed
(:func:`log_consumed_skips`), so the log holds the samples a run consumed, never the
read-ahead. Eval samples that cannot be decoded are logged where they are met
(:func:`note_bad`). The log is JSON lines, appended to by every process;
:func:`read_skip_log` reads it back (a step a resumed run consumed again counts once) and
:func:`summarize_skips` says it in a paragraph.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any, Sequence

import numpy as np

from ppsn import paths
from ppsn.data.decode import DecodeError

log = logging.getLogger(__name__)

SKIP_INFO_BYTES = 1024  # per train example: JSON of the records it replaced (truncated beyond)


def note_bad(skip_log: str | None, record, error: DecodeError, mode: str):
    """Log (warning and one skip-log line) an eval sample that could not be decoded."""
    log.warning("bad sample (%s): %s: %s", mode, error.path, error.reason)
    if skip_log:
        line = json.dumps({"mode": mode, "index": int(record.get("index", -1)),
                           "video_id": str(record.get("video_id", "")), "file": error.path,
                           "reason": error.reason})
        with open(skip_log, "a", encoding="utf-8") as f:  # one short O_APPEND write: atomic
            f.write(line + "\n")


def encode_skips(skips: list[list]) -> np.ndarray:
    """``[[index, video_id, file, reason], ...]`` -> uint8 ``[SKIP_INFO_BYTES]`` (JSON, zero
    padded); entries that do not fit are dropped (their count stays in ``replaced``)."""
    out = np.zeros(SKIP_INFO_BYTES, np.uint8)
    for keep in range(len(skips), -1, -1):
        data = json.dumps(skips[:keep]).encode()
        if len(data) <= SKIP_INFO_BYTES:
            out[:len(data)] = np.frombuffer(data, np.uint8)
            return out
    return out


def consumed_skips(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The bad samples replaced to make a train batch: one dict per replaced record (``row``,
    ``index``, ``video_id``, ``file``, ``reason``); details beyond ``SKIP_INFO_BYTES`` per example
    come back as ``file='?'``."""
    out = []
    for row in np.nonzero(batch["replaced"] > 0)[0]:
        raw = batch["skipped"][row].tobytes().rstrip(b"\0")
        entries = json.loads(raw) if raw else []
        for k in range(int(batch["replaced"][row])):
            index, video_id, path, reason = entries[k] if k < len(entries) else (
                -1, "", "?", "details truncated")
            out.append({"row": int(row), "index": index, "video_id": video_id, "file": path,
                        "reason": reason})
    return out


def log_consumed_skips(batch: dict[str, np.ndarray], skip_log: str | None,
                       step: int | None = None) -> int:
    """Log (warning and one skip-log line each) the bad samples replaced in a train batch the
    run consumed; returns how many. ``step`` lets :func:`read_skip_log` count a step that a
    resumed run consumed again once."""
    entries = consumed_skips(batch)
    lines = []
    for e in entries:
        log.warning("bad sample (train): %s: %s", e["file"], e["reason"])
        lines.append(json.dumps({"mode": "train", "step": step, **e}))
    if skip_log and lines:
        with open(skip_log, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return len(entries)


def read_skip_log(path: str) -> list[dict[str, Any]]:
    """The bad samples a run logged (one dict per occurrence; a train step that a resumed run
    consumed again counts once)."""
    if not path or not paths.exists(path):
        return []
    entries, seen = [], set()
    with paths.path(path).open() as f:
        for line in f:
            if not line.strip():
                continue
            entry = json.loads(line)
            if entry.get("step") is not None:
                key = (entry["step"], entry.get("row"), entry.get("index"), entry.get("file"))
                if key in seen:
                    continue
                seen.add(key)
            entries.append(entry)
    return entries


def summarize_skips(entries: Sequence[dict[str, Any]]) -> str:
    """One paragraph: how many bad samples, and the most common reasons with an example file."""
    if not entries:
        return "no bad samples"
    by_reason = Counter(e["reason"] for e in entries)
    example = {e["reason"]: e["file"] for e in entries}
    files = len({e["file"] for e in entries})
    lines = [f"{len(entries)} bad samples ({files} distinct files):"]
    for reason, count in by_reason.most_common(10):
        lines.append(f"  {count} x {reason} (e.g. {example[reason]})")
    return "\n".join(lines)
