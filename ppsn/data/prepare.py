"""Prepare a dataset as TFDS-readable ArrayRecord files (no TensorFlow needed).

    python -m ppsn.data.prepare --dataset kinetics400|ucf101|toy \\
        --manual_dir D --data_dir OUT [--config frames|videos] [--num_workers N] [--window W]
        [--shard_mb MB] [--force]

``--manual_dir`` holds what you downloaded (see the dataset docstrings in ``ppsn/data/tfds/``);
for ``toy`` it is generated there if absent. Videos are encoded in ``--num_workers`` processes
with at most ``--window`` videos in flight (memory stays bounded whatever the dataset size) and
written in order, one progress bar per split (done / total, skipped). Killed, the same command
resumes after the last closed shard (about ``--shard_mb`` each); if the inputs changed it says
so and starts over. The dataset appears in ``OUT/NAME/CONFIG/2.0.0`` only when complete;
``--force`` replaces an existing one (only a dataset ppsn prepared). Prints a summary (videos
written per split, skipped files with reasons), also in ``prepare_report.json`` beside the data.
Exit status (:mod:`ppsn.cli`): 0 written; 1 written, but some files were skipped; 2 nothing
written (one line on stderr says why).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import functools
import json
import os
import sys
from typing import Callable, Iterable, Iterator

from tqdm import tqdm


@dataclasses.dataclass
class Prepared:
    """What :func:`prepare` did."""

    name: str
    config: str
    data_dir: str                   # the prepared dataset's directory
    written: dict[str, int]         # videos per split written by this run's dataset
    report: list                    # Skipped, in the report's order
    already: bool = False           # nothing done: it was prepared before
    resumed: dict[str, int] = dataclasses.field(default_factory=dict)  # split -> videos done before
    restart_reason: str = ""
    max_in_flight: int = 0          # most videos submitted and not yet written


def bounded_map(fn: Callable, items: Iterable, window: int, pool=None,
                stats: dict | None = None) -> Iterator[tuple]:
    """``(item, fn(item))`` in order, with at most ``window`` items submitted to ``pool`` and
    not yet handed back (``items`` is consumed as results are taken: ``pool.map`` would submit
    everything at once). Without a pool, in this process. ``stats['max_in_flight']`` records the
    most items in flight."""
    if pool is None:
        for item in items:
            if stats is not None:
                stats["max_in_flight"] = max(stats.get("max_in_flight", 0), 1)
            yield item, fn(item)
        return
    pending = collections.deque()
    for item in items:
        pending.append((item, pool.submit(fn, item)))
        if stats is not None:
            stats["max_in_flight"] = max(stats.get("max_in_flight", 0), len(pending))
        if len(pending) >= window:
            item, future = pending.popleft()
            yield item, future.result()
    while pending:
        item, future = pending.popleft()
        yield item, future.result()


def _pool(num_workers: int):
    """Encoding processes (started with ``spawn``: forking a process that runs threads can
    deadlock the child), one library thread each."""
    if num_workers <= 1:
        return None
    import multiprocessing

    from ppsn.data import decode

    return concurrent.futures.ProcessPoolExecutor(
        num_workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=decode.set_threads, initargs=(1,))


def _write_split(part, split: str, entries, encode, window: int, pool, stats: dict,
                 result: Prepared, progress: bool) -> None:
    """Encode and write one split's videos from where an earlier run stopped (``part``: the
    writer's split), skipping those that cannot be encoded."""
    from ppsn.data.tfds.base import Skipped

    if part.position:
        result.resumed[split] = part.videos
        print(f"{split}: resuming after {part.position} of {len(entries)} videos "
              f"({part.shards_resumed} shards already written)", file=sys.stderr)
    bar = tqdm(total=len(entries), initial=part.position, desc=split, unit="video",
               disable=not progress, postfix=f"skipped {part.skipped}", bar_format="{desc}: "
               "{n_fmt}/{total_fmt} videos{postfix} [{elapsed}<{remaining}, {rate_fmt}]")
    for entry, (encoded, path, reason) in bounded_map(
            encode, entries[part.position:], window, pool, stats):
        if encoded is None:
            part.skip(Skipped(split, entry.video_id, path, reason))
            bar.set_postfix_str(f"skipped {part.skipped}", refresh=False)
        else:
            part.write(entry, encoded)
        bar.update(1)
    part.close_shard()
    bar.close()


def prepare(dataset: str, manual_dir: str, data_dir: str, config: str = "frames",
            num_workers: int = 1, *, window: int | None = None, shard_mb: float = 1024,
            force: bool = False, progress: bool = False, local_dir: str | None = None,
            **dataset_kwargs) -> Prepared:
    """Prepare (or resume preparing) one dataset config; see the module docstring. A bucket
    ``data_dir`` (``gs://...``) is prepared in ``local_dir`` first (ArrayRecord files are
    written locally), then uploaded (:func:`upload`)."""
    from ppsn import paths

    if paths.is_remote(data_dir):
        return _prepare_to_bucket(dataset, manual_dir, data_dir, config, num_workers,
                                  local_dir, window=window, shard_mb=shard_mb, force=force,
                                  progress=progress, **dataset_kwargs)
    from ppsn.data import toy
    from ppsn.data.tfds import get_dataset, writer
    from ppsn.data.tfds.base import Skipped
    from ppsn.data.tfds.encode import encode_or_reason

    if dataset == "toy" and not os.path.exists(os.path.join(manual_dir, toy.MARKER)):
        toy.generate(manual_dir, progress=progress)
    if not os.path.isdir(manual_dir):
        raise FileNotFoundError(f"--manual_dir {manual_dir} does not exist")
    ds = get_dataset(dataset, config, **dataset_kwargs)
    final = writer.dataset_dir(data_dir, ds.name, config)
    if os.path.exists(final):
        if not writer.is_prepared_dataset(final):
            raise FileExistsError(f"{final} exists and is not a dataset ppsn prepared; "
                                  "not replacing it (move it away)")
        if not force:
            return Prepared(ds.name, config, final, {}, [], already=True)
    names = ds.class_names(manual_dir)
    splits = ds.split_entries(manual_dir)
    out = writer.DatasetWriter(final, ds.name, config, names, ds.NUM_CLASSES,
                               writer.fingerprint(config, names, splits), shard_mb * 2**20)
    result = Prepared(ds.name, config, final, {}, [], restart_reason=out.restart_reason)
    if out.restart_reason:
        print(out.restart_reason, file=sys.stderr)
    window = window or 4 * max(1, num_workers)
    stats = {}
    encode = functools.partial(encode_or_reason, config=config)
    pool = _pool(num_workers)
    try:
        for split, entries in splits.items():
            _write_split(out.split(split), split, entries, encode, window, pool, stats, result,
                         progress)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    report = out.finish(ds.report, force)
    result.written = report["written"]
    result.report = [Skipped(**s) for s in report["skipped"]]
    result.max_in_flight = stats.get("max_in_flight", 0)
    return result


def default_local_dir() -> str:
    """Where a dataset for a bucket is prepared before its upload, unless ``--local_dir``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ppsn", "prepare")


def _prepare_to_bucket(dataset, manual_dir, data_dir, config, num_workers, local_dir,
                       force=False, **kwargs) -> Prepared:
    from ppsn import paths
    from ppsn.data.tfds import get_dataset, writer
    from ppsn.data.tfds.base import Skipped

    name = get_dataset(dataset, config, **{k: v for k, v in kwargs.items()
                                           if k not in ("window", "shard_mb", "progress")}).name
    remote = writer.dataset_dir(data_dir, name, config)
    if writer.is_prepared_dataset(remote) and not force:
        return Prepared(name, config, remote, {}, [], already=True)
    local_dir = local_dir or default_local_dir()
    result = prepare(dataset, manual_dir, local_dir, config, num_workers, force=force, **kwargs)
    if result.already:  # prepared locally by an earlier run whose upload did not finish
        result.already = False
        report = json.loads(paths.path(paths.join(result.data_dir, writer.REPORT_FILE))
                            .read_text())
        result.written = report["written"]
        result.report = [Skipped(**x) for x in report["skipped"]]
    print(f"uploading {result.data_dir} to {remote}", file=sys.stderr)
    upload(result.data_dir, remote, force=force)
    result.data_dir = remote
    return result


def upload(local: str, remote: str, force: bool = False) -> int:
    """Copies a prepared dataset to a bucket, the metadata file that marks it complete last (a
    reader never takes a partial upload for a dataset); an object already there with the same
    size is not sent again, so an interrupted upload resumes. Returns the files sent."""
    from ppsn import paths
    from ppsn.data.tfds import writer

    target = paths.path(remote)
    if force and writer.is_prepared_dataset(remote):
        (target / writer.METADATA_FILE).unlink()  # no longer a complete dataset from here on
    names = sorted(os.listdir(local), key=lambda n: n == writer.METADATA_FILE)
    sent = 0
    for name in names:
        source = os.path.join(local, name)
        if os.path.isdir(source):
            sent += paths.upload_tree(source, target / name)
            continue
        dest = target / name
        if name != writer.METADATA_FILE and dest.exists() and \
                dest.stat().length == os.path.getsize(source):
            continue
        paths.copy_file(source, dest)
        sent += 1
    return sent


def summary(result: Prepared) -> str:
    if result.already:
        return (f"{result.name}/{result.config} already prepared in {result.data_dir} "
                "(--force prepares it again)")
    lines = [f"{result.name}/{result.config} written to {result.data_dir}:"]
    for split, count in sorted(result.written.items()):
        resumed = result.resumed.get(split)
        lines.append(f"  {split}: {count} videos" + (
            f" ({resumed} written by the interrupted run)" if resumed else ""))
    lines.append(f"  skipped: {len(result.report)}")
    for reason, count in collections.Counter(s.reason for s in result.report).most_common(10):
        example = next(s.path for s in result.report if s.reason == reason)
        lines.append(f"    {count} x {reason} (e.g. {example})")
    if result.report:
        lines.append(f"  full list: {result.data_dir}/prepare_report.json")
    return "\n".join(lines)


def main(argv=None) -> int:
    from ppsn.data.loading import available_cpus
    from ppsn.data.tfds import DATASETS

    parser = argparse.ArgumentParser(prog="python -m ppsn.data.prepare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--manual_dir", required=True, help="folder with the downloaded files")
    parser.add_argument("--data_dir", required=True,
                        help="where the dataset is written (a local folder or gs://bucket/path)")
    parser.add_argument("--local_dir", default=None,
                        help="for a gs:// --data_dir: the local folder it is prepared in before "
                             f"the upload (default {default_local_dir()}; needs the dataset's size)")
    parser.add_argument("--config", default="frames", choices=("frames", "videos"))
    parser.add_argument("--num_workers", type=int, default=available_cpus(),
                        help="encoding processes (default: the CPUs this process may use)")
    parser.add_argument("--window", type=int, default=None,
                        help="most videos in flight (default 4 x num_workers)")
    parser.add_argument("--shard_mb", type=float, default=1024,
                        help="shard size in MB (resuming restarts at a shard boundary)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing prepared dataset (only one ppsn prepared)")
    parser.add_argument("--ucf_split", type=int, default=1, help="UCF-101 official split (1-3)")
    args = parser.parse_args(argv)
    extra = {"ucf_split": args.ucf_split} if args.dataset == "ucf101" else {}
    from ppsn import cli

    try:
        result = prepare(args.dataset, args.manual_dir, args.data_dir, args.config,
                         args.num_workers, window=args.window, shard_mb=args.shard_mb,
                         force=args.force, progress=True, local_dir=args.local_dir, **extra)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(cli.one_line(e), file=sys.stderr)
        return cli.USAGE
    print(summary(result))
    # ppsn.cli's codes: 1 = written, but some files were skipped (prepare_report.json)
    return cli.SOME_INPUTS_BAD if result.report else cli.OK


if __name__ == "__main__":
    from ppsn import cli

    sys.exit(cli.run(main))  # Ctrl-C: one line, exit 130
