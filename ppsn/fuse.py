"""Fuse the per-video scores of several test runs over the same list (mmaction2's
``report_accuracy.py``):

    python -m ppsn.fuse --runs OUT_A OUT_B [--weights 1,0.5] --output_dir OUT_FUSED [--force]

Each ``--runs`` directory is a test mode output (``python -m ppsn.main --mode=test``) holding
``scores.npz``. The fused score of a video is the weighted mean of its runs' scores (equal
weights by default; :func:`ppsn.evaluation.metrics.fuse`); a video that failed to decode in any
run counts as wrong. Prints ``Top-1: ... Top-5: ... mean class Top-1: ...`` and writes test
mode's reports (``summary.json``, ``ledger.csv``, ``per_class.csv``, ``confusion_matrix.png``,
``scores.npz``) to ``--output_dir``; fusing a run with itself gives that run's numbers exactly.

Exit status (:mod:`ppsn.cli`): 0 fused; 1 fused, but some videos failed to decode in a run; 2 a
usage error (runs over different lists or class counts, a directory without ``scores.npz``,
weights that do not match the runs, an existing ``--output_dir`` without ``--force``).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ppsn import cli
from ppsn.evaluation import metrics
from ppsn.evaluation import scores as score_files


def parse_weights(text: str | None, runs: int) -> list[float]:
    if text is None:
        return [1.0] * runs
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise cli.UserError(f"--weights={text}: not comma-separated numbers") from None
    if len(weights) != runs:
        raise cli.UserError(f"--weights={text}: {len(weights)} weights for {runs} runs")
    if any(w < 0 for w in weights) or not sum(weights) > 0:
        raise cli.UserError(f"--weights={text}: weights must be >= 0 with a positive sum")
    return weights


def load_runs(directories) -> list[score_files.RunScores]:
    """Each directory's scores, checked to be over the same list and class count as the first."""
    runs = []
    for directory in directories:
        try:
            runs.append(score_files.read(directory))
        except FileNotFoundError:
            raise cli.UserError(f"--runs {directory}: no {score_files.SCORES_FILE} (not a test "
                                "mode output directory)") from None
    first, name = runs[0], directories[0]
    for run, directory in zip(runs[1:], directories[1:]):
        if run.num_classes != first.num_classes:
            raise cli.UserError(f"--runs {directory}: {run.num_classes} classes, {name} has "
                                f"{first.num_classes}: fuse runs of the same classes")
        same = (run.list_sha256 == first.list_sha256
                and np.array_equal(run.video_id, first.video_id)
                and np.array_equal(run.label, first.label))
        if not same:
            raise cli.UserError(f"--runs {directory}: scored {run.list} ({len(run.label)} videos), "
                                f"{name} scored {first.list} ({len(first.label)} videos): "
                                "fuse runs over the same list")
    return runs


def fuse_runs(runs, weights) -> score_files.RunScores:
    first = runs[0]
    failed = np.logical_or.reduce([r.failed for r in runs])
    return score_files.RunScores(
        first.video_id, first.label, metrics.fuse([r.scores for r in runs], weights), failed,
        " + ".join(f"{w:g} x {r.model}" for w, r in zip(weights, runs)), first.list,
        first.list_sha256)


def run(args) -> int:
    from ppsn import checkpoint
    from ppsn.evaluation.reports import write_reports

    weights = parse_weights(args.weights, len(args.runs))
    runs = load_runs(args.runs)
    checkpoint.check_replaceable(args.output_dir, force=args.force, marker="summary.json",
                                 kind="ppsn test report")
    fused = fuse_runs(runs, weights)
    summary = {**metrics.summarize(fused.scores, fused.label, fused.failed),
               "count": len(fused.label), "failed": int(fused.failed.sum()),
               "checkpoint": fused.model, "runs": list(args.runs), "weights": weights,
               "list": fused.list, "list_sha256": fused.list_sha256 or None}
    names = [str(c) for c in range(fused.num_classes)]
    if args.label_list:
        from ppsn.data.labels import read_label_names

        try:
            given = read_label_names(args.label_list)
        except ValueError as e:
            raise cli.UserError(f"--label_list: {e}") from None
        names = [given.get(c, str(c)) for c in range(fused.num_classes)]
    pred = np.where(fused.failed, -1, np.nan_to_num(fused.scores, nan=-1).argmax(-1))
    with checkpoint.replacing(args.output_dir, force=args.force, marker="summary.json",
                              kind="ppsn test report") as tmp:
        write_reports(tmp, [str(v) for v in fused.video_id], fused.label, pred, fused.scores,
                      fused.failed, names, summary)
        score_files.write(tmp, fused)
    print(f"Top-1: {summary['top1']:.4f}  Top-5: {summary['top5']:.4f}  "
          f"mean class Top-1: {summary['mean_class_top1']:.4f}  ({summary['count']} videos, "
          f"{len(runs)} runs; reports in {args.output_dir})")
    return cli.SOME_INPUTS_BAD if summary["failed"] else cli.OK


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppsn.fuse",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True,
                        help="test mode output directories (each holds scores.npz)")
    parser.add_argument("--weights", default=None, help="one weight per run, e.g. 1,0.5")
    parser.add_argument("--output_dir", required=True, help="where the fused reports go")
    parser.add_argument("--label_list", default=None, help="class names ('id name' per line)")
    parser.add_argument("--force", action="store_true",
                        help="replace --output_dir if it is an earlier test report")
    return cli.run(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
