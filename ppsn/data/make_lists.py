"""PaddleVideo list files from a folder tree, one folder per class.

    python -m ppsn.data.make_lists --root DIR --output_dir OUT [--val_fraction 0.2]
        [--test_fraction 0] [--seed 0] [--format videos|frames] [--force]

``DIR/<class>/<video>`` (``--format videos``: files with a video extension) or
``DIR/<class>/<frame folder>/img_00001.jpg ...`` (``--format frames``) becomes
``OUT/train_<format>.list``, ``OUT/val_<format>.list`` (with ``--val_fraction > 0``),
``OUT/test_<format>.list`` (with ``--test_fraction > 0``) and ``OUT/label_list.txt`` (classes
numbered in name order). Paths are relative to ``DIR``: train with
``--config.data.data_prefix=DIR``. Each class is split on its own (stratified): of its ``n``
videos, ``round(n * val_fraction)`` go to val and ``round(n * test_fraction)`` to test, chosen by
a generator seeded with ``(seed, class id)``, so the same folder and seed give the same lists.
Anything else (files without a video extension, frame folders without frames, names with
spaces, which list files cannot hold, files outside a class folder) is skipped and counted.
Existing list files are never overwritten without ``--force``.

Exit status (:mod:`ppsn.cli`): 0 written; 1 written, but some files were skipped (the output
names them); 2 nothing written (no videos under ``--root``, fractions that do not fit, an
existing output without ``--force``).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys

import numpy as np

from ppsn import cli, paths
from ppsn.data.decode import VIDEO_EXTENSIONS

FRAME = re.compile(r"img_\d{5}\.jpg")


@dataclasses.dataclass
class Tree:
    """A scanned folder tree: class names (id order), each class's list-file entries, and what
    was skipped (``(path, reason)``)."""

    classes: list[str]
    entries: list[list[str]]
    skipped: list[tuple[str, str]]


def _entry(root: str, cls: str, name: str, fmt: str) -> tuple[str | None, str]:
    """The list-file entry (without the label) for ``root/cls/name``, or ``(None, reason)``."""
    path = paths.join(root, cls, name)
    if any(c.isspace() for c in cls + name):
        return None, "whitespace in the path (list files split on it)"
    if fmt == "videos":
        if paths.is_dir(path) or not name.lower().endswith(VIDEO_EXTENSIONS):
            return None, "not a video file (extensions " + " ".join(VIDEO_EXTENSIONS) + ")"
        return f"{cls}/{name}", ""
    frames = [f for f in paths.listdir(path) if FRAME.fullmatch(f)] if paths.is_dir(path) else []
    if not frames:
        return None, "not a frame folder (no img_00001.jpg ...)"
    return f"{cls}/{name} {len(frames)}", ""


def scan(root: str, fmt: str) -> Tree:
    """The classes and entries under ``root`` (``fmt``: videos or frames), in name order."""
    if not paths.is_dir(root):
        raise NotADirectoryError(f"--root {root}: not a directory")
    tree = Tree([], [], [])
    for cls in paths.listdir(root):
        if not paths.is_dir(paths.join(root, cls)):
            tree.skipped.append((paths.join(root, cls), "not in a class folder"))
            continue
        found = []
        for name in paths.listdir(paths.join(root, cls)):
            entry, reason = _entry(root, cls, name, fmt)
            if entry is None:
                tree.skipped.append((paths.join(root, cls, name), reason))
            else:
                found.append(entry)
        if found:
            tree.classes.append(cls)
            tree.entries.append(found)
    if not tree.classes:
        item = "video file" if fmt == "videos" else "frame folder"
        raise cli.NothingToDo(f"--root {root}: no {fmt} in class folders (expected "
                              f"{root}/<class>/<{item}>)")
    return tree


def split(tree: Tree, val_fraction: float, test_fraction: float, seed: int
          ) -> dict[str, list[str]]:
    """``{'train'|'val'|'test': list-file lines}``, each class split on its own."""
    out = {"train": [], "val": [], "test": []}
    for label, entries in enumerate(tree.entries):
        order = np.random.default_rng([seed, label]).permutation(len(entries))
        n_val = int(round(len(entries) * val_fraction))
        n_test = int(round(len(entries) * test_fraction))
        parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test],
                 "train": order[n_val + n_test:]}
        for part, picked in parts.items():
            out[part] += [f"{entries[i]} {label}" for i in sorted(picked)]
    return out


def write(output_dir: str, fmt: str, tree: Tree, lists: dict, val: bool, test: bool,
          force: bool) -> list[str]:
    """Writes the list files and ``label_list.txt``; returns their paths."""
    files = {f"{part}_{fmt}.list": lists[part]
             for part, wanted in (("train", True), ("val", val), ("test", test)) if wanted}
    files["label_list.txt"] = [f"{i} {name}" for i, name in enumerate(tree.classes)]
    targets = {name: paths.join(output_dir, name) for name in files}
    existing = [t for t in targets.values() if paths.exists(t)]
    if existing and not force:
        raise FileExistsError(f"{existing[0]}: already exists (pass --force to overwrite the "
                              "list files)")
    paths.makedirs(output_dir)
    for name, lines in files.items():
        paths.path(targets[name]).write_text("".join(line + "\n" for line in lines))
    return list(targets.values())


def run(args) -> int:
    for flag in ("val_fraction", "test_fraction"):
        if not 0 <= getattr(args, flag) < 1:
            raise cli.UserError(f"--{flag}={getattr(args, flag)}: must be in [0, 1)")
    if args.val_fraction + args.test_fraction >= 1:
        raise cli.UserError(f"--val_fraction + --test_fraction = "
                            f"{args.val_fraction + args.test_fraction}: nothing left to train on")
    tree = scan(args.root, args.format)
    lists = split(tree, args.val_fraction, args.test_fraction, args.seed)
    written = write(args.output_dir, args.format, tree, lists, args.val_fraction > 0,
                    args.test_fraction > 0, args.force)
    for path, reason in tree.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    counts = ", ".join(f"{len(lists[p])} {p}" for p in ("train", "val", "test") if lists[p])
    print(f"{len(tree.classes)} classes, {counts}, {len(tree.skipped)} skipped; wrote "
          f"{', '.join(written)} (train with --config.data.data_prefix={args.root})")
    return cli.SOME_INPUTS_BAD if tree.skipped else cli.OK


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppsn.data.make_lists",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="DIR/<class>/<video or frame folder>")
    parser.add_argument("--output_dir", required=True, help="where the list files go")
    parser.add_argument("--val_fraction", type=float, default=0.2)
    parser.add_argument("--test_fraction", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=("videos", "frames"), default="videos")
    parser.add_argument("--force", action="store_true", help="overwrite existing list files")
    return cli.run(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
