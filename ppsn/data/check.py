"""Pre-flight check of a dataset list: decode every entry, report the bad ones.

    python -m ppsn.data.check --list FILE --format videos|frames [--data_prefix DIR]
        [--num_classes N] [--config CONFIG] [--report PATH] [--num_workers N]

An entry is bad when anything a run would do with it fails, so that a list that passes is one
where training replaces no sample and test mode scores no video -1:

* every frame decodes (frames: all ``num_frames`` files the line announces, reported by file;
  videos: the whole stream, as many frames as it has packets), all of one size;
* the clips of each mode are made exactly as the pipelines make them (``ppsn.data.clips``:
  sampling, decoding of the sampled frames, transforms) with the clip settings of ``--config``
  (default: the recipe's 3 segments, 25 at test, 256 / 224);
* list lines that do not parse (fields, labels outside ``--num_classes``) are bad too, and so
  is a line naming the same frame folder or video as an earlier line (reported with both
  line numbers; the earlier line is checked).

Prints ``N ok, M bad`` (and the first bad entries), then writes every bad entry with its reason
to the report (default ``FILE.check.tsv``; its path is checked before the pass: never an input
of the check, nor an existing file that is not an earlier report, whose first line is
:data:`REPORT_HEADER`). Exit status
(:mod:`ppsn.cli`): 0 all entries good; 1 some are bad (the report lists them), so the check
can gate a job; 2 it could not run (missing list, bad arguments, an unwritable report) or the
list has no entries.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys

import numpy as np
from tqdm import tqdm

from ppsn import cli, paths
from ppsn.data import clips, decode
from ppsn.data.lists import ListFileSource


def _decode_all_frames(record) -> None:
    """Every frame the line announces, each named by its file on failure, all of one size."""
    frame_dir, count = record["frame_dir"], record["num_frames"]
    first = None
    for i in range(count):
        path = decode.frame_path(frame_dir, i)
        name = os.path.basename(path)
        try:
            image = decode.decode_jpeg(decode.read_frame_bytes(frame_dir, i), path)
        except decode.DecodeError as e:
            if e.reason == "missing frame file":
                raise decode.DecodeError(path, f"missing frame file {name} (list says {count} "
                                               f"frames, found {i})") from None
            raise decode.DecodeError(path, f"{name}: {e.reason}") from None
        size = image.shape[1], image.shape[0]
        if first is None:
            first = (name, size)
        elif size != first[1]:
            raise decode.DecodeError(path, f"frames of different sizes: {name} is "
                                           f"{size[0]}x{size[1]}, {first[0]} "
                                           f"{first[1][0]}x{first[1][1]}")


def check_record(record, specs=()) -> str | None:
    """None if the record is good, else the reason. ``specs`` are the
    :class:`ppsn.data.clips.ClipSpec` of the modes to make a clip for, as the pipelines do."""
    try:
        if "frame_dir" in record:
            _decode_all_frames(record)
        else:
            with decode.VideoFile(record["video_path"]) as video:
                video.verify()
        for spec in specs:
            try:
                if spec.mode == "test" and spec.device_crops:
                    clips.load_canvas_clip(record, spec)
                else:
                    clips.load_clip(record, spec, np.random.default_rng(0))
            except decode.DecodeError as e:
                return f"{spec.mode} clip: {e.reason}"
            except Exception as e:  # anything else the pipeline would die of
                return f"{spec.mode} clip: {type(e).__name__}: {e}"
    except decode.DecodeError as e:
        return e.reason
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    return None


def clip_specs(config_file: str | None = None) -> list:
    """The clip specs of training, validation and test mode from a config file (default: the
    recipe's)."""
    from ppsn.data import datasets

    if config_file:
        import importlib.util

        spec = importlib.util.spec_from_file_location("ppsn_check_config", config_file)
        if spec is None or not os.path.isfile(config_file):
            raise cli.UserError(f"--config {config_file}: no such config file")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        data = module.get_config().data
    else:
        from ppsn.recipe import pptsn_config

        data = pptsn_config().data
    try:
        return [datasets.clip_spec(data, mode) for mode in clips.MODES]
    except ValueError as e:
        raise cli.UserError(f"--config {config_file or '(the recipe)'}: {e}") from None


REPORT_HEADER = "# ppsn data.check report"  # the first line: what an earlier report holds


def check_report_path(path: str, inputs=()) -> None:
    """Raise :class:`ppsn.cli.UserError` unless a report can be written at ``path`` (checked
    before the pass, so that hours of decoding never end in an unwritable report). A report is
    never written over one of ``inputs`` (the list, the config) nor over an existing file that
    is not an earlier report (its first line is :data:`REPORT_HEADER`)."""
    if os.path.isdir(path):
        raise cli.UserError(f"--report {path}: is a directory; give a file path")
    for name, given in inputs:
        if given and _same_file(path, given):
            raise cli.UserError(f"--report {path}: is the {name} this check reads; give the "
                                "report another path")
    existed = os.path.exists(path)
    if existed and not _is_report(path):
        raise cli.UserError(f"--report {path}: exists and is not an earlier data.check report "
                            f"(its first line is not {REPORT_HEADER!r}); refusing to replace it: "
                            "give the report another path or remove that file")
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as e:
        raise cli.UserError(f"--report {path}: cannot be written ({e.strerror or e})") from None
    if not existed:
        os.remove(path)


def _same_file(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)  # also through a link or another spelling
    return os.path.abspath(a) == os.path.abspath(b)


def _is_report(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.readline().rstrip(b"\r\n") == REPORT_HEADER.encode()
    except OSError:
        return False


def run_check(list_file: str, fmt: str, data_prefix: str = "", num_classes: int | None = None,
              report: str | None = None, num_workers: int = 1, progress: bool = True,
              specs=None, config_file: str | None = None):
    """Returns ``(num_ok, bad, report path)`` with ``bad`` a list of ``(where, reason)``; does
    not write the report (:func:`write_report`)."""
    report = report or list_file + ".check.tsv"
    check_report_path(report, [("--list", list_file), ("--config", config_file)])
    source = ListFileSource(list_file, fmt, data_prefix, num_classes)
    if not source.records and not source.skipped:
        raise cli.NothingToDo(f"{list_file} has no entries: nothing to check")
    specs = clip_specs() if specs is None else specs
    bad = [(f"{list_file}:{s.line_number}", s.reason) for s in source.skipped]
    duplicates = _duplicates(source)
    bad += [(f"{list_file}:{line}", reason) for line, reason in duplicates.values()]
    records = [r for r in source.records if r["index"] not in duplicates]
    pool = concurrent.futures.ThreadPoolExecutor(max(1, num_workers))
    try:
        results = pool.map(lambda r: check_record(r, specs), records)
        num_ok = 0
        for record, reason in tqdm(zip(records, results), total=len(records), unit="video",
                                   desc="checking", disable=not progress):
            if reason is None:
                num_ok += 1
            else:
                bad.append((record.get("frame_dir") or record.get("video_path"), reason))
    finally:  # on Ctrl-C: the entries not started are dropped, not checked first
        pool.shutdown(wait=True, cancel_futures=True)
    return num_ok, bad, report


def _duplicates(source) -> dict[int, tuple[int, str]]:
    """``{record index: (line, reason)}`` of the lines naming an entry an earlier line named."""
    first, out = {}, {}
    for record, line in zip(source.records, source.line_numbers):
        entry = record.get("frame_dir") or record.get("video_path")
        entry = entry if paths.is_remote(entry) else os.path.normpath(entry)  # a/./b/ is a/b
        if entry in first:
            earlier_line, earlier_label = first[entry]
            labels = (f"label {record['label']} there too" if record["label"] == earlier_label
                      else f"label {earlier_label} there, {record['label']} here")
            out[record["index"]] = (line, f"duplicate of line {earlier_line} ({labels})")
        else:
            first[entry] = (line, record["label"])
    return out


def write_report(report: str, bad) -> None:
    with open(report, "w", encoding="utf-8") as f:
        f.write(f"{REPORT_HEADER}\nentry\treason\n")
        f.writelines(f"{where}\t{reason}\n" for where, reason in bad)


def run(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppsn.data.check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", required=True, help="PaddleVideo list file")
    parser.add_argument("--format", required=True, choices=("videos", "frames"))
    parser.add_argument("--data_prefix", default="", help="prefix of the list's relative paths")
    parser.add_argument("--num_classes", type=int, default=None)
    parser.add_argument("--config", default=None,
                        help="the run's config file: its clip settings (segments, sizes, test "
                        "sampling) are used to make each mode's clip (default: the recipe's)")
    parser.add_argument("--report", default=None, help="report path (default FILE.check.tsv)")
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    specs = clip_specs(args.config)
    try:
        num_ok, bad, report = run_check(args.list, args.format, args.data_prefix,
                                        args.num_classes, args.report, args.num_workers,
                                        specs=specs, config_file=args.config)
    except ValueError as e:  # a list that is not a text file, a bad format
        raise cli.UserError(str(e)) from None
    print(f"{num_ok} ok, {len(bad)} bad")  # before the report is written, whatever happens
    for where, reason in bad[:20]:
        print(f"  {where}: {reason}")
    if len(bad) > 20:
        print(f"  ... {len(bad) - 20} more")
    try:
        write_report(report, bad)
    except OSError as e:
        raise cli.UserError(f"--report {report}: cannot be written ({e.strerror or e})") from None
    print(f"report: {report}")
    return cli.SOME_INPUTS_BAD if bad else cli.OK


def main(argv=None) -> int:
    return cli.run(run, argv)


if __name__ == "__main__":
    sys.exit(main())
