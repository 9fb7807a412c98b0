"""Import PaddleVideo / PaddleClas ``.pdparams`` checkpoints into ppsn's Flax variables.

``load_pdparams`` (:mod:`ppsn.convert.pdparams`) reads the pickle without Paddle and without
executing code from the file.

``to_flax`` maps three layouts onto :class:`ppsn.models.TSN` variables, strictly (every
missing, unexpected or mis-shaped key is listed in one error):

* full PP-TSN checkpoints: ``backbone.*`` and ``head.fc.*``;
* ImageNet backbone checkpoints (PaddleClas ``ResNet50_vd_pretrained.pdparams``): backbone keys
  without a prefix; the 1000-class classifier ``out.*`` is dropped and the head is left to the
  caller;
* distillation checkpoints: ``Student.0.*`` (backbone) / ``Student.1.*`` (head), likewise
  ``Teacher.``; ``submodel`` picks which one;
* the student-only file PaddleVideo's distillation trainer saves beside it
  (``*_student.pdparams``): the student's keys with ``Student.`` cut, ``0.*`` (backbone) /
  ``1.*`` (head); reported as layout ``distillation_student_only``.

Command line::

    python -m ppsn.convert.paddle --pdparams ppTSN_k400.pdparams --depth 50 --output DIR

Exit status (:mod:`ppsn.cli`): 0 converted; 2 with one line on stderr when the file cannot be
read or does not fit the model (the line says what the file holds, e.g. "holds a
ResNet-50-vd; you asked for depth 18"), or the output is refused (it exists and ``--force`` is
not given, or it is not a ppsn checkpoint, which is never replaced).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import sys
from typing import Mapping

import numpy as np

from ppsn.convert.pdparams import (  # noqa: F401  (re-exported: the reader's API)
    ALLOWED_GLOBALS, PARAM_NAME_TABLE_KEY, UnsafePickleError, load_pdparams)

SHOWN_KEYS = 8


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not match the model. The first line of the message
    (``diagnosis``) says what the file holds ("holds a ResNet-50-vd; you asked for 18"); the
    lines after it list the differences (at most :data:`SHOWN_KEYS` keys of each kind; all of
    them are in ``missing``, ``unexpected`` and ``mismatched``)."""

    def __init__(self, diagnosis: str, missing=(), unexpected=(), mismatched=(),
                 name_keys: bool = True):
        self.diagnosis = diagnosis
        self.name_keys = name_keys  # False when the diagnosis says it all (another depth)
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        lines = [diagnosis]
        for title, items in (("missing", missing), ("unexpected", unexpected),
                             ("shape mismatch", mismatched)):
            if items:
                shown = ", ".join(items[:SHOWN_KEYS])
                more = f", ... ({len(items) - SHOWN_KEYS} more)" if len(items) > SHOWN_KEYS else ""
                lines.append(f"  {len(items)} {title}: {shown}{more}")
        super().__init__("\n".join(lines))

    def line(self, shown: int = 5) -> str:
        """One line: the diagnosis, then up to ``shown`` keys of each kind by name."""
        if not self.name_keys:
            return self.diagnosis
        parts = []
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("mis-shaped", self.mismatched)):
            if items:
                more = f", ... ({len(items) - shown} more)" if len(items) > shown else ""
                parts.append(f"{title}: {', '.join(items[:shown])}{more}")
        return "; ".join([self.diagnosis] + parts)


# ---------------------------------------------------------------------------------------------
# Key mapping

_UNIT_LEAVES = {
    # Paddle conv-BN unit leaf -> (collection, flax leaf path)
    "_conv.weight": ("params", ("conv", "kernel")),
    "_batch_norm.weight": ("params", ("bn", "scale")),
    "_batch_norm.bias": ("params", ("bn", "bias")),
    "_batch_norm._mean": ("batch_stats", ("bn", "mean")),
    "_batch_norm._variance": ("batch_stats", ("bn", "var")),
}
_HEAD_LEAVES = {
    "fc.weight": ("params", ("fc", "kernel")),  # Paddle Linear is already [in, out]
    "fc.bias": ("params", ("fc", "bias")),
}


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    """What ``to_flax`` found: the layout, the classes and what it dropped on purpose."""

    # 'pptsn', 'imagenet_backbone', 'distillation/<submodel>' or 'distillation_student_only'
    layout: str
    num_params: int
    num_classes: int | None
    dropped: tuple[str, ...]


def _split_distillation_index(key: str, rest: str):
    """``0.<backbone key>`` -> ``backbone.<key>``, ``1.<head key>`` -> ``head.<key>``; anything
    else keeps ``key`` as it is (reported as unexpected)."""
    if rest.startswith("0."):
        return "backbone." + rest[2:]
    if rest.startswith("1."):
        return "head." + rest[2:]
    return key


def _select_submodel(state: Mapping[str, np.ndarray], submodel: str):
    """Normalize any supported layout to ``backbone.*`` / ``head.*`` keys."""
    keys = list(state)
    if submodel not in ("student", "teacher"):
        raise ValueError(f"submodel must be 'student' or 'teacher', got {submodel!r}")
    if any(k.startswith(("0.", "1.")) for k in keys):
        # PaddleVideo's *_student.pdparams: the Student's keys without the 'Student.' prefix.
        if submodel != "student":
            raise ValueError("checkpoint holds only a distillation student (keys 0.* / 1.*, "
                             "layout distillation_student_only); it has no teacher")
        return ({_split_distillation_index(k, k): v for k, v in state.items()},
                "distillation_student_only", [])
    if any(k.startswith(("Student.", "Teacher.")) for k in keys):
        prefix = submodel.capitalize() + "."
        other = "Teacher." if prefix == "Student." else "Student."
        out, dropped = {}, []
        for k, v in state.items():
            if k.startswith(prefix):
                out[_split_distillation_index(k, k[len(prefix):])] = v
            elif k.startswith(other):
                dropped.append(k)
            else:
                out[k] = v
        if not any(k.startswith(prefix) for k in keys):
            raise ValueError(f"distillation checkpoint has no {prefix}* keys")
        return out, f"distillation/{submodel}", dropped
    if any(k.startswith("backbone.") for k in keys):
        return dict(state), "pptsn", []
    out, dropped = {}, []
    for k, v in state.items():
        if k.startswith("out."):
            dropped.append(k)  # the ImageNet classifier
        else:
            out["backbone." + k] = v
    return out, "imagenet_backbone", dropped


def _flax_path(key: str):
    """``backbone.bb_0_0.conv0._conv.weight`` -> ('params', ('backbone', 'bb_0_0', 'conv0', 'conv', 'kernel'))."""
    if key.startswith("head."):
        leaf = _HEAD_LEAVES.get(key[len("head."):])
        return None if leaf is None else (leaf[0], leaf[1])
    if not key.startswith("backbone."):
        return None
    rest = key[len("backbone."):]
    for suffix, (collection, leaf) in _UNIT_LEAVES.items():
        if rest.endswith("." + suffix):
            unit = tuple(rest[: -len(suffix) - 1].split("."))
            return collection, ("backbone",) + unit + leaf
    return None


def _expected_shapes(depth: int, num_classes: int) -> dict[tuple, tuple]:
    from ppsn.models import tsn

    return {(path[0], path[1:]): shape
            for path, shape in tsn.variable_shapes(depth, num_classes).items()}


def held_depth(state: Mapping[str, np.ndarray]) -> int | None:
    """The ResNet-vd depth whose blocks the ``backbone.*`` keys hold (None: no depth fits)."""
    from ppsn.models import plan

    names = {k.split(".")[1] for k in state if k.startswith("backbone.bb_")}
    bottleneck = any(".conv2." in k for k in state if k.startswith("backbone.bb_"))
    return plan.depth_of(names, bottleneck)


def _diagnose(state, layout, depth, missing, unexpected, mismatched) -> str:
    """The first line of a mismatch error: what the file holds against what was asked."""
    from ppsn import checkpoint_fit

    held = held_depth(state)
    what = f"checkpoint (layout {layout})"
    misfit = checkpoint_fit.misfits(f"this {what}", depth, meta={"depth": held}, wants="convert")
    if misfit:
        return misfit[0]
    if held is None and any(k.startswith("backbone.bb_") for k in state):
        return (f"this {what} does not match TSN(depth={depth}): its residual blocks fit no "
                "ResNet-vd depth (18, 34, 50, 101, 152, 200); is it a PP-TSN / ResNet-vd file?")
    counts = ", ".join(f"{len(items)} {title}" for title, items in (
        ("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched)) if items)
    return f"this {what} holds a ResNet-{depth}-vd but does not match it: {counts} keys"


def _transform(key: str, value: np.ndarray) -> np.ndarray:
    value = np.asarray(value, dtype=np.float32)
    if key.endswith("._conv.weight"):
        if value.ndim != 4:
            return value  # shape check reports it
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))  # [out,in,kh,kw] -> HWIO
    return value


def to_flax(
    state_dict: Mapping[str, np.ndarray],
    depth: int,
    submodel: str = "student",
    *,
    allow_missing_head: bool | None = None,
    return_report: bool = False,
):
    """Map a Paddle state dict onto ``{'params', 'batch_stats'}`` of ``TSN(depth, num_classes)``.

    ``num_classes`` is read from ``head.fc.weight``. When the file has no head (ImageNet
    backbone checkpoints) the returned variables hold only ``backbone``; the caller adds a
    freshly initialized ``fc``. ``allow_missing_head`` defaults to True only for the ImageNet
    layout. Everything else is strict: one :class:`CheckpointMismatchError` lists all missing,
    unexpected and mis-shaped keys by name.
    """
    state, layout, dropped = _select_submodel(state_dict, submodel)
    if allow_missing_head is None:
        allow_missing_head = layout == "imagenet_backbone"
    head_w = state.get("head.fc.weight")
    num_classes = int(head_w.shape[-1]) if head_w is not None and head_w.ndim == 2 else None

    flat, unexpected = {}, []
    for key, value in state.items():
        target = _flax_path(key)
        if target is None:
            unexpected.append(key)
        else:
            flat[target] = (key, _transform(key, value))

    expected = _expected_shapes(depth, num_classes or 1)
    if num_classes is None and allow_missing_head:
        expected = {k: s for k, s in expected.items() if k[1][0] != "fc"}

    def paddle_name(target):
        collection, path = target
        return collection + "/" + "/".join(path)

    missing = sorted(paddle_name(t) for t in expected if t not in flat)
    unexpected += sorted(key for t, (key, _) in flat.items() if t not in expected)
    mismatched = sorted(
        f"{key}: checkpoint {tuple(v.shape)} vs model {expected[t]}"
        for t, (key, v) in flat.items()
        if t in expected and tuple(v.shape) != expected[t]
    )
    if missing or unexpected or mismatched:
        held = held_depth(state)
        raise CheckpointMismatchError(
            _diagnose(state, layout, depth, missing, unexpected, mismatched), missing,
            unexpected, mismatched, name_keys=held is None or held == depth)

    from flax import traverse_util

    variables = traverse_util.unflatten_dict(
        {(collection,) + path: v for (collection, path), (_, v) in flat.items()})
    if not return_report:
        return variables
    report = ConversionReport(layout, len(flat), num_classes, tuple(sorted(dropped)))
    return variables, report


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv=None) -> int:
    import argparse

    from ppsn import checkpoint, cli, paths

    parser = argparse.ArgumentParser(
        prog="python -m ppsn.convert.paddle",
        description="Convert a PaddleVideo/PaddleClas .pdparams file into a ppsn Orbax checkpoint.",
    )
    parser.add_argument("--pdparams", required=True, help="the .pdparams file")
    parser.add_argument("--depth", type=int, default=50, help="ResNet-vd depth (default 50)")
    parser.add_argument("--output", required=True, help="output checkpoint directory")
    parser.add_argument("--submodel", default="student", choices=("student", "teacher"),
                        help="which model of a distillation checkpoint to take")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing output (only if it is a ppsn checkpoint)")
    args = parser.parse_args(argv)
    try:  # refuse the output before the (slow) conversion; save_variables checks it again
        checkpoint.check_replaceable(args.output, force=args.force)
    except FileExistsError as e:
        print(cli.one_line(e), file=sys.stderr)
        return cli.USAGE
    try:
        state = load_pdparams(args.pdparams)
    except (OSError, ValueError, pickle.UnpicklingError, cli.UserError) as e:
        print(cli.one_line(e), file=sys.stderr)
        return cli.USAGE
    try:
        variables, report = to_flax(state, args.depth, args.submodel, return_report=True)
    except CheckpointMismatchError as e:
        print(cli.one_line(f"{args.pdparams}: {e.line()}"), file=sys.stderr)
        return cli.USAGE
    except ValueError as e:
        print(cli.one_line(f"{args.pdparams}: {e}"), file=sys.stderr)
        return cli.USAGE
    meta = {"depth": args.depth, "num_classes": report.num_classes, "layout": report.layout,
            "source": os.fspath(paths.absolute(args.pdparams))}
    try:
        path = checkpoint.save_variables(args.output, variables, meta, force=args.force)
    except FileExistsError as e:
        print(cli.one_line(e), file=sys.stderr)
        return cli.USAGE
    print(f"loaded {args.pdparams}: layout {report.layout}, {report.num_params} tensors, "
          f"ResNet-vd {args.depth}, "
          + (f"{report.num_classes} classes" if report.num_classes else "no head (backbone only)"))
    if report.dropped:
        shown = ", ".join(report.dropped[:4]) + (", ..." if len(report.dropped) > 4 else "")
        print(f"ignored {len(report.dropped)} keys on purpose (not part of this model): {shown}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    from ppsn import cli

    sys.exit(cli.run(main))  # Ctrl-C: one line, exit 130
