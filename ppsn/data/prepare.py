"""Prepare a dataset as TFDS ArrayRecord files (no TensorFlow needed).

    python -m ppsn.data.prepare --dataset kinetics400|ucf101|toy \\
        --manual_dir D --data_dir OUT [--config frames|videos] [--num_workers N]

``--manual_dir`` holds what you downloaded (see ``--help_dataset`` or the builder docstrings in
``ppsn/data/tfds/``); for ``toy`` it is generated there if absent. Prints TFDS's
progress bars, then a summary (videos written per split, skipped files with reasons) and writes
the skipped files to ``prepare_report.json`` beside the prepared data. Exit status
(:mod:`ppsn.cli`): 0 written; 1 written, but some files were skipped; 2 nothing written (one
line on stderr says why).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import sys


def prepare(dataset: str, manual_dir: str, data_dir: str, config: str = "frames",
            num_workers: int = 1, **builder_kwargs):
    """Prepare one dataset config; returns the builder (with ``written`` and ``report``)."""
    import tensorflow_datasets as tfds

    from ppsn.data import toy
    from ppsn.data.tfds import get_builder

    if dataset == "toy" and not os.path.exists(os.path.join(manual_dir, toy.MARKER)):
        toy.generate(manual_dir, progress=True)
    if not os.path.isdir(manual_dir):
        raise FileNotFoundError(f"--manual_dir {manual_dir} does not exist")
    builder = get_builder(dataset, config, data_dir, manual_dir=manual_dir,
                          num_workers=num_workers, **builder_kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, try_download_gcs=False))
    if builder.written or builder.report:
        with open(os.path.join(builder.data_dir, "prepare_report.json"), "w") as f:
            json.dump({"written": builder.written,
                       "skipped": [dataclasses.asdict(s) for s in builder.report]}, f, indent=1)
    return builder


def summary(builder) -> str:
    if not builder.written and not builder.report:
        return f"{builder.name}/{builder.builder_config.name} already prepared in {builder.data_dir}"
    lines = [f"{builder.name}/{builder.builder_config.name} written to {builder.data_dir}:"]
    for split, count in sorted(builder.written.items()):
        lines.append(f"  {split}: {count} videos")
    lines.append(f"  skipped: {len(builder.report)}")
    for reason, count in collections.Counter(s.reason for s in builder.report).most_common(10):
        example = next(s.path for s in builder.report if s.reason == reason)
        lines.append(f"    {count} x {reason} (e.g. {example})")
    if builder.report:
        lines.append(f"  full list: {os.path.join(builder.data_dir, 'prepare_report.json')}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from ppsn.data.tfds import BUILDERS

    parser = argparse.ArgumentParser(prog="python -m ppsn.data.prepare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, choices=sorted(BUILDERS))
    parser.add_argument("--manual_dir", required=True, help="folder with the downloaded files")
    parser.add_argument("--data_dir", required=True, help="where the TFDS dataset is written")
    parser.add_argument("--config", default="frames", choices=("frames", "videos"))
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ucf_split", type=int, default=1, help="UCF-101 official split (1-3)")
    args = parser.parse_args(argv)
    extra = {"ucf_split": args.ucf_split} if args.dataset == "ucf101" else {}
    from ppsn import cli

    try:
        builder = prepare(args.dataset, args.manual_dir, args.data_dir, args.config,
                          args.num_workers, **extra)
    except (FileNotFoundError, ValueError) as e:
        print(cli.one_line(e), file=sys.stderr)
        return cli.USAGE
    print(summary(builder))
    # ppsn.cli's codes: 1 = written, but some files were skipped (prepare_report.json)
    return cli.SOME_INPUTS_BAD if builder.report else cli.OK


if __name__ == "__main__":
    sys.exit(main())
