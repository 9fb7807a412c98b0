"""Writing an output directory in place of an earlier one (checkpoints, exports, test reports).

The new version is written to a temporary sibling (``DIR.ppsn-tmp``) and swapped in; an earlier
output is replaced only with ``force`` and only if it holds its kind's marker file
(:func:`check_replaceable`). :mod:`ppsn.checkpoint` re-exports these for its callers.
"""

from __future__ import annotations

import contextlib
import os

from ppsn import paths


def absolute(directory) -> str:
    """``directory`` as an absolute path string (a ``gs://`` URL stays one)."""
    return os.fspath(paths.absolute(directory))


def _siblings(directory: str) -> tuple[str, str]:
    """Where a save writes the new checkpoint and moves the old one: the same names on every
    process."""
    return directory + ".ppsn-tmp", directory + ".ppsn-old"


def check_replaceable(directory: str | os.PathLike, *, force: bool, marker: str,
                      kind: str) -> None:
    """Raise ``FileExistsError`` (one line naming ``directory``) unless an output of ``kind``
    may be written there: it must not exist, or, with ``force``, be an empty directory or an
    earlier output of the same kind (it holds ``marker``: ``ppsn.json`` for a checkpoint).
    Anything else is never replaced. Used for checkpoints, exports and test reports."""
    directory = absolute(directory)
    target = paths.path(directory)
    if not (os.path.lexists(directory) if not paths.is_remote(directory) else target.exists()):
        return
    if not force:
        raise FileExistsError(f"{directory}: already exists (pass force=True / --force to replace it)")
    if not target.is_dir() or os.path.islink(directory):
        raise FileExistsError(f"{directory}: is not a directory, so not a {kind}; "
                              "refusing to replace it even with --force")
    if paths.listdir(directory) and not (target / marker).is_file():
        if _interrupted_swap(directory, marker):
            return  # our own save, stopped mid-swap in a bucket: a complete copy is beside it
        raise FileExistsError(f"{directory}: is not a {kind} (no {marker}); refusing "
                              "to replace it even with --force (remove it or pick another output)")


def _interrupted_swap(directory: str, marker: str) -> bool:
    """Whether ``directory`` (without ``marker``) is what a save killed during a bucket swap
    left: a partial copy, with the complete one (holding ``marker``) under a sibling name."""
    return any((paths.path(s) / marker).is_file() for s in _siblings(directory))


def replacement_path(directory: str | os.PathLike) -> str:
    """Where the new version of an output directory is written before :func:`swap_in`."""
    return _siblings(absolute(directory))[0]


def prepare_replacement(directory: str | os.PathLike, marker: str | None = None) -> str:
    """Clear what a crashed save left and create the empty temporary sibling of ``directory``
    (:func:`replacement_path`); returns it."""
    return _prepare(absolute(directory), marker)


def swap_in(directory: str | os.PathLike, marker: str | None = None) -> None:
    """Put the written temporary sibling in place of ``directory`` (see :func:`_swap_in`)."""
    _swap_in(absolute(directory), marker)


@contextlib.contextmanager
def replacing(directory: str | os.PathLike, *, force: bool, marker: str, kind: str):
    """Write a new output directory (one process): checks :func:`check_replaceable`, yields the
    temporary sibling to write into, and on success puts it in place (:func:`_swap_in`); on
    failure it is removed and the old output stays as it was."""
    check_replaceable(directory, force=force, marker=marker, kind=kind)
    tmp = prepare_replacement(directory, marker)
    try:
        yield tmp
    except BaseException:
        paths.remove_tree(tmp)
        raise
    swap_in(directory, marker)


def _prepare(directory: str, marker: str | None = None) -> str:
    """Clear what a crashed save left and create the empty temporary sibling; returns it. A
    ``directory`` without ``marker`` beside an ``old`` with it is a swap killed half-way: the
    partial copy goes, the complete one is kept until the next swap."""
    tmp, old = _siblings(directory)
    paths.remove_tree(tmp)
    partial = (marker is not None and paths.exists(directory)
               and not (paths.path(directory) / marker).is_file()
               and (paths.path(old) / marker).is_file())
    if partial:
        paths.remove_tree(directory)
    elif paths.exists(directory):  # else ``old`` may be the only copy left: kept until the swap
        paths.remove_tree(old)
    paths.makedirs(tmp)
    return tmp


def _swap_in(directory: str, marker: str | None) -> None:
    """Move the temporary sibling to ``directory``; an existing ``directory`` is moved aside
    first (and put back if the second move fails), then deleted. Locally each move is one
    atomic rename. In a bucket a move is a copy then a delete, with ``marker`` copied last
    (:func:`ppsn.paths.move_tree`): at every moment one complete copy holds its marker, under
    ``directory``, its ``.ppsn-tmp`` or its ``.ppsn-old`` name."""
    tmp, old = _siblings(directory)
    if paths.exists(directory):
        paths.move_tree(directory, old, last=marker)
    try:
        paths.move_tree(tmp, directory, last=marker)
    except BaseException:
        if paths.exists(old) and not paths.exists(directory):
            paths.move_tree(old, directory, last=marker)
        raise
    paths.remove_tree(old)
