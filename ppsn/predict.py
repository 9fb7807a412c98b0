"""Classify video files with an exported model (``python -m ppsn.export``).

    python -m ppsn.predict --input_file=video.avi --model_dir=inference/ppTSN
        [--label_list=FILE] [--top_k=5] [--backend=xla|onnxruntime|openvino]
        [--precision=fp32|bf16|int8] [--threads=N]
    python -m ppsn.predict --test_list=LIST --model_dir=... [--compare=backend:precision]

``--input_file`` may be repeated or name a directory (its video files are taken in name
order). Each video is decoded with PyAV, sampled and TenCropped exactly as the test mode does,
and scored by the exported artifact through ``--backend`` (XLA by default; ONNX Runtime and
OpenVINO for fast CPU serving, OpenVINO also in bf16); the model code and config are not
needed. A file that is
missing, unreadable or corrupt, or a directory without video files, gets a one-line error and
the others still run. ``--test_list`` prints the TenCrop Top-1 over a PaddleVideo list
instead (:mod:`ppsn.serve.list_top1`; ``--compare`` scores the same clips a second way and
prints the top-1 agreement). Exit status (:mod:`ppsn.cli`): 0 every video classified; 1 some inputs
failed, the others were classified; 2 nothing was classified (a usage error, a model or label
list that cannot be used, or inputs holding no video at all).

A timeline over one long video (:mod:`ppsn.serve.timeline`):

    python -m ppsn.predict --input_file=LONG.mp4 --model_dir=DIR --window_seconds=S
        [--stride_seconds=T] --timeline=OUT.json [--top_k=K]

classifies consecutive windows of ``S`` seconds (one every ``T`` seconds, default ``S``), each
sampled as the model expects of a video, decoding the video once; writes ``OUT.json``
(``{"windows": [{"start_s", "end_s", "top_k": [[class, score], ...]}, ...]}``) and ``OUT.png``
(the top classes' scores over time). A video shorter than one window exits 2.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ppsn import cli
from ppsn.data.decode import VIDEO_EXTENSIONS
from ppsn.serve.predictor import Predictor


def _inputs(paths):
    """The video files the ``--input_file`` values name; a directory without video files is
    yielded as ``(path, None)``."""
    from ppsn import paths as ppsn_paths

    for path in paths:  # local, or gs:// (read through ppsn.paths)
        if ppsn_paths.is_dir(path):
            names = [n for n in ppsn_paths.listdir(path) if n.lower().endswith(VIDEO_EXTENSIONS)]
            if not names:
                yield path, None
            for name in names:
                yield ppsn_paths.join(path, name), name
        else:
            yield path, path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ppsn.predict",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--input_file", action="append",
                        help="a video file or a directory of videos (repeatable)")
    parser.add_argument("--test_list", default=None, help="instead of --input_file: the "
                        "TenCrop Top-1 over this PaddleVideo list (videos or frame folders)")
    parser.add_argument("--data_prefix", default=None, help="prefix of --test_list's relative "
                        "paths (default: the list's folder)")
    parser.add_argument("--compare", default=None, help="with --test_list: backend[:precision] "
                        "scored on the same clips, e.g. openvino:fp32 (top-1 agreement)")
    parser.add_argument("--model_dir", default="inference/ppTSN")
    parser.add_argument("--label_list", default=None, help="'id name' per line")
    parser.add_argument("--top_k", type=int, default=1)
    parser.add_argument("--backend", default="xla", choices=("xla", "onnxruntime", "openvino"),
                        help="xla: the jax.export artifact; onnxruntime / openvino: model.onnx "
                        "(export with --onnx; pip install 'ppsn[serve]')")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int8"),
                        help="bf16: openvino on a CPU with AVX512-BF16 or AMX; int8: openvino, "
                        "on an export made with --int8")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    parser.add_argument("--timeline", default=None,
                        help="OUT.json: scores of consecutive windows of one video (and OUT.png)")
    parser.add_argument("--window_seconds", type=float, default=None, help="window length")
    parser.add_argument("--stride_seconds", type=float, default=None,
                        help="time between window starts (default: --window_seconds)")
    return parser


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if bool(args.input_file) == bool(args.test_list):
        parser.error("give --input_file or --test_list (one of them)")
    if args.timeline or args.window_seconds or args.stride_seconds:
        return cli.run(_timeline, args)

    try:
        predictor = _predictor(args)
    except cli.UserError as e:
        print(cli.one_line(e), file=sys.stderr)
        return cli.USAGE
    if args.test_list:
        from ppsn.serve import list_top1

        return list_top1.run(args, predictor)
    names = _label_names(args.label_list, predictor.meta["num_classes"])
    if names is None:
        return cli.USAGE
    return _classify(predictor, args.input_file, names, args.top_k)


def _label_names(label_list: str | None, num_classes: int) -> dict | None:
    """The class names of ``--label_list`` (none without it), or None (the error printed) if
    it cannot be read or does not name every class of the model."""
    from ppsn.data.labels import read_label_names

    try:
        names = read_label_names(label_list) if label_list else {}
    except (OSError, ValueError) as e:
        print(cli.one_line(f"--label_list: {e}"), file=sys.stderr)
        return None
    missing = [i for i in range(num_classes) if i not in names]
    if label_list and missing:
        print(f"error: --label_list={label_list} names {len(names)} classes; the model has "
              f"{num_classes} (no name for id {missing[0]})", file=sys.stderr)
        return None
    return names


def _classify(predictor: Predictor, input_files, names: dict, top_k: int) -> int:
    """Print the top-k classes of each input video; the exit code."""
    from ppsn.data.decode import DecodeError

    failures = done = 0
    for path, name in _inputs(input_files):
        if name is None:
            print(f"error: {path}: no video files in this directory (extensions "
                  f"{' '.join(VIDEO_EXTENSIONS)})", file=sys.stderr)
            failures += 1
            continue
        try:
            clip = predictor.clip(path)
        except DecodeError as e:
            print(cli.one_line(e), file=sys.stderr)
            failures += 1
            continue
        done += 1
        scores = predictor.scores(clip[None])[0]
        order = np.argsort(-scores)[: max(1, top_k)]
        print(f"Current video file: {path}")
        for rank, c in enumerate(order, start=1):
            print(f"\ttop-{rank} class: {int(c)}")
            if int(c) in names:
                print(f"\ttop-{rank} class name: {names[int(c)]}")
            print(f"\ttop-{rank} score: {float(scores[c])}")
    if not done:
        print(f"error: nothing classified ({failures} inputs failed)", file=sys.stderr)
        return cli.USAGE
    return cli.SOME_INPUTS_BAD if failures else cli.OK


def _timeline(args) -> int:
    import json

    from ppsn import paths
    from ppsn.data.decode import DecodeError
    from ppsn.data.labels import read_label_names
    from ppsn.serve import timeline

    if not args.timeline or not args.window_seconds:
        raise cli.UserError("a timeline needs --timeline=OUT.json and --window_seconds")
    if not args.timeline.endswith(".json"):
        raise cli.UserError(f"--timeline={args.timeline}: must end with .json (OUT.png goes "
                            "beside it)")
    stride = args.stride_seconds or args.window_seconds
    if args.window_seconds <= 0 or stride <= 0:
        raise cli.UserError("--window_seconds and --stride_seconds must be > 0")
    if len(args.input_file) != 1 or paths.is_dir(args.input_file[0]):
        raise cli.UserError("a timeline is for one video file: give one --input_file")
    predictor = _predictor(args)
    try:
        names = read_label_names(args.label_list) if args.label_list else {}
        result = timeline.timeline(predictor, args.input_file[0], args.window_seconds, stride,
                                   args.top_k, names)
    except (DecodeError, ValueError) as e:
        raise cli.UserError(str(e)) from None
    paths.path(args.timeline).write_text(json.dumps(result, indent=1))
    with paths.path(args.timeline[:-len(".json")] + ".png").open("wb") as f:
        timeline.plot(result, f)
    print(f"{len(result['windows'])} windows of {args.window_seconds:g} s every {stride:g} s: "
          f"{args.timeline} and {args.timeline[:-len('.json')]}.png")
    return cli.OK


def _predictor(args) -> Predictor:
    """The exported model of ``args`` (files, lists and timelines alike); one that cannot be
    opened is a :class:`ppsn.cli.UserError`."""
    from ppsn.serve.backends import BackendError, MissingRuntime

    try:
        return Predictor(args.model_dir, args.backend, args.precision, args.threads)
    except FileNotFoundError as e:
        raise cli.UserError(f"{args.model_dir}: not an exported model ({e.strerror}: "
                            f"{e.filename})") from None
    except (MissingRuntime, BackendError) as e:
        raise cli.UserError(str(e)) from None


if __name__ == "__main__":
    sys.exit(cli.run(main))
