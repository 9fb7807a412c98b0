"""Pre-flight check of a dataset list: decode every entry, report the bad ones.

    python -m ppsn.data.check --list FILE --format videos|frames [--data_prefix DIR]
        [--num_classes N] [--report PATH] [--num_workers N]

Every frame of every entry is decoded (frames: all ``num_frames`` files the line announces;
videos: the whole stream). Bad list lines (wrong fields, labels out of range) count as bad too.
Prints ``N ok, M bad`` and writes the bad entries with their reasons to the report (default:
``FILE.check.tsv``). Exits 0 when the check ran to the end, whatever it found; non-zero only
when it could not run (missing list file, bad arguments).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys

from tqdm import tqdm

from ppsn.data import decode
from ppsn.data.lists import ListFileSource


def check_record(record) -> str | None:
    """None if the record decodes completely, else the reason."""
    try:
        if "frame_dir" in record:
            for i in range(record["num_frames"]):
                try:
                    data = decode.read_frame_bytes(record["frame_dir"], i)
                except decode.DecodeError as e:
                    return f"{e.reason} {os.path.basename(e.path)} (list says {record['num_frames']} frames, found {i})"
                decode.decode_jpeg(data, decode.frame_path(record["frame_dir"], i))
        else:
            with decode.VideoFile(record["video_path"]) as video:
                video.verify()
    except decode.DecodeError as e:
        return e.reason
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    return None


def run_check(list_file: str, fmt: str, data_prefix: str = "", num_classes: int | None = None,
              report: str | None = None, num_workers: int = 1, progress: bool = True):
    """Returns ``(num_ok, bad)`` with ``bad`` a list of ``(where, reason)``; writes the report."""
    source = ListFileSource(list_file, fmt, data_prefix, num_classes)
    bad = [(f"{list_file}:{s.line_number}", s.reason) for s in source.skipped]
    records = source.records
    with concurrent.futures.ThreadPoolExecutor(max(1, num_workers)) as pool:
        results = pool.map(check_record, records)
        num_ok = 0
        for record, reason in tqdm(zip(records, results), total=len(records), unit="video",
                                   desc="checking", disable=not progress):
            if reason is None:
                num_ok += 1
            else:
                bad.append((record.get("frame_dir") or record.get("video_path"), reason))
    report = report or list_file + ".check.tsv"
    with open(report, "w", encoding="utf-8") as f:
        f.write("entry\treason\n")
        f.writelines(f"{where}\t{reason}\n" for where, reason in bad)
    return num_ok, bad, report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppsn.data.check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", required=True, help="PaddleVideo list file")
    parser.add_argument("--format", required=True, choices=("videos", "frames"))
    parser.add_argument("--data_prefix", default="", help="prefix of the list's relative paths")
    parser.add_argument("--num_classes", type=int, default=None)
    parser.add_argument("--report", default=None, help="report path (default FILE.check.tsv)")
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    try:
        num_ok, bad, report = run_check(args.list, args.format, args.data_prefix,
                                        args.num_classes, args.report, args.num_workers)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{num_ok} ok, {len(bad)} bad")
    for where, reason in bad[:20]:
        print(f"  {where}: {reason}")
    if len(bad) > 20:
        print(f"  ... {len(bad) - 20} more")
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
