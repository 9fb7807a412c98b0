"""TenCrop Top-1 of an exported model over a PaddleVideo list (``predict --test_list``).

Every entry is made into a clip as ``predict`` makes it (:func:`ppsn.serve.predictor.load_clip`)
and scored by the chosen backend/precision and, with ``--compare=backend:precision``, by a
second runner of the same export on the same clip, so that e.g. int8 and fp32 are compared on
exactly the same list: each one's Top-1 (test mode's reducer, :mod:`ppsn.evaluation.metrics`)
and the fraction of videos whose top-1 they agree on.
An entry that cannot be decoded is reported on one line and left out (exit status 1).
"""

from __future__ import annotations

import sys

import numpy as np

from ppsn import cli


def _runners(args, predictor):
    from ppsn.serve import backends

    runners = {f"{args.backend}:{args.precision}": predictor.runner}
    if args.compare:
        backend, _, precision = args.compare.partition(":")
        runners[f"{backend}:{precision or 'fp32'}"] = backends.load(
            predictor.model_dir, backend, precision or "fp32", args.threads)
    return runners


def score(predictor, runners: dict, records) -> tuple[dict, list, list]:
    """``({name: scores [videos, classes]}, labels, errors)`` over ``records``."""
    from ppsn.data.decode import DecodeError
    from ppsn.serve.predictor import load_clip

    scores = {name: [] for name in runners}
    labels, errors = [], []
    for record in records:
        try:
            clip = load_clip(predictor.meta, record)[None]
        except DecodeError as e:
            errors.append(cli.one_line(e))
            continue
        labels.append(record["label"])
        for name, runner in runners.items():
            scores[name].append(runner.scores(clip)[0])
    return {k: np.array(v) for k, v in scores.items()}, np.array(labels), errors


def run(args, predictor) -> int:
    """Prints each runner's Top-1 over ``args.test_list`` and, with ``--compare``, their
    top-1 agreement; the exit status."""
    from ppsn import paths
    from ppsn.evaluation import metrics
    from ppsn.serve.calibration import read_records

    try:
        runners = _runners(args, predictor)
        prefix = args.data_prefix
        if prefix is None:
            prefix = str(paths.path(args.test_list).parent)
        records = read_records(args.test_list, None, prefix,
                               predictor.meta["num_classes"], flag="--test_list")
    except (cli.UserError, ValueError, ImportError) as e:  # a bad --compare or list
        print(cli.one_line(e), file=sys.stderr)
        return cli.USAGE
    scores, labels, errors = score(predictor, runners, records)
    for line in errors:
        print(line, file=sys.stderr)
    if not len(labels):
        print(f"error: nothing classified ({len(errors)} entries of {args.test_list} failed)",
              file=sys.stderr)
        return cli.USAGE
    for name, got in scores.items():  # test mode's reducer (a tie counts against the label)
        print(f"{name} Top-1 {metrics.topk_correct(got, labels, 1).mean():.4f} ({len(labels)} "
              f"videos of {args.test_list})")
    if len(scores) == 2:
        (a, sa), (b, sb) = scores.items()
        same = int(np.sum(sa.argmax(-1) == sb.argmax(-1)))
        print(f"top-1 agreement {a} vs {b}: {same / len(labels):.4f} ({same}/{len(labels)})")
    return cli.SOME_INPUTS_BAD if errors else cli.OK
