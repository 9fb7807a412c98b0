"""Paths a user gives ppsn: local, or ``gs://bucket/...`` (Cloud Storage), one type for both.

Every path from a command line or a config (workdirs, weights, outputs, list files, label lists,
``data_prefix``, TFDS data dirs, checkpoints to start from) goes through :func:`path`, which
returns an ``etils.epath.Path``: the same calls read and write a local file and a bucket
object. Local paths behave as plain ``open`` / ``os.path`` would; a ``gs://`` path needs the
``gcs`` extra (``gcsfs``) and is a one-line error naming it otherwise.

Cloud Storage is not a file system, and this module is where that shows:

* an object appears whole when it is closed; there is no append and no atomic rename of a
  directory (it is a copy and a delete per object). :func:`move_tree` copies a marker file
  last, so a directory that holds its marker is complete;
* files that are appended to as a run goes (``train.log``, the bad-sample logs) and files that
  libraries write locally (TensorBoard events) are written to a local copy and copied to the
  bucket by a :class:`Mirror`, when asked and when closed;
* gcsfs's listings cache is off: a process must see what another process (another host of the
  job) wrote a moment ago.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from etils import epath

from ppsn.cli import UserError

GCS = "gs://"
_gcs_ready = False


class MissingExtraError(UserError, ImportError):
    """A ``gs://`` path without the ``gcs`` extra installed."""


def is_remote(p) -> bool:
    """True for a ``gs://`` URL."""
    return os.fspath(p).startswith(GCS)


def path(p) -> epath.Path:
    """``p`` (str, os.PathLike or epath.Path) as an ``epath.Path``; ``~`` expanded."""
    if isinstance(p, epath.Path) and not is_remote(p):
        return p
    text = os.fspath(p)
    if is_remote(text):
        _use_gcs(text)
        return epath.Path(text)
    return epath.Path(os.path.expanduser(text))


def absolute(p) -> epath.Path:
    """:func:`path`, made absolute when local (a bucket URL is absolute already)."""
    p = path(p)
    return p if is_remote(p) else epath.Path(os.path.abspath(os.fspath(p)))


def join(base, *parts) -> str:
    """``os.path.join`` that keeps ``gs://`` URLs intact; an absolute part (local or a URL)
    replaces what is before it."""
    out = os.fspath(base)
    for part in parts:
        part = os.fspath(part)
        if is_remote(part) or os.path.isabs(part):
            out = part
        else:
            out = (out.rstrip("/") + "/" + part) if is_remote(out) else os.path.join(out, part)
    return out


def _use_gcs(url: str) -> None:
    """Checks that gcsfs is there; configures it once per process (no listings cache: other
    processes' writes must be visible; forked children get a filesystem of their own)."""
    global _gcs_ready
    if _gcs_ready:
        return
    try:
        import importlib

        import fsspec.config

        importlib.import_module("gcsfs")  # epath's backend for gs:// without TensorFlow
    except ImportError:
        raise MissingExtraError(f"{url}: gs:// paths need the 'gcs' extra: "
                                "pip install 'ppsn[gcs]' (gcsfs)") from None
    fsspec.config.conf.setdefault("gcs", {}).setdefault("use_listings_cache", False)
    from etils.epath.backend import fsspec_backend

    cached = getattr(fsspec_backend, "_get_filesystem", None)
    if cached is not None and hasattr(cached, "cache_clear"):
        cached.cache_clear()  # built before the configuration above
        os.register_at_fork(after_in_child=cached.cache_clear)  # gcsfs is not fork-safe
    _gcs_ready = True


def makedirs(p) -> epath.Path:
    """Creates a local directory (and its parents); a bucket needs none (a "directory" exists
    once an object is written below it)."""
    p = path(p)
    if not is_remote(p):
        p.mkdir(parents=True, exist_ok=True)
    return p


def check_usable_dir(p, flag: str) -> None:
    """A :class:`UserError` naming ``flag`` when ``p`` cannot be a folder: a local path that is
    a file or sits under one; a bucket path without credentials or a reachable server (found
    in seconds, not after a minute of retries)."""
    if is_remote(p):
        _check_gcs_reachable(p, flag)
        return
    target = here = os.path.abspath(os.path.expanduser(os.fspath(p)))
    while True:
        if os.path.exists(here) and not os.path.isdir(here):
            where = "is a file" if here == target else f"is under {here}, a file"
            raise UserError(f"{flag}={os.fspath(p)}: {where}, not a folder")
        parent = os.path.dirname(here)
        if parent == here:
            return
        here = parent


def _check_gcs_reachable(url, flag: str, timeout: float = 5.0) -> None:
    import socket
    import urllib.parse

    path(url)  # the gcs extra
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        parsed = urllib.parse.urlsplit(emulator if "//" in emulator else f"http://{emulator}")
        server = f"the storage server {emulator} (STORAGE_EMULATOR_HOST)"
        address = (parsed.hostname, parsed.port or 80)
    else:
        import google.auth
        import google.auth.exceptions

        try:
            google.auth.default()
        except google.auth.exceptions.DefaultCredentialsError as e:
            raise UserError(f"{flag}={url}: no Google Cloud credentials ({e}): run `gcloud auth "
                            "application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
                            ) from None
        server, address = "storage.googleapis.com", ("storage.googleapis.com", 443)
    try:
        socket.create_connection(address, timeout=timeout).close()
    except OSError as e:
        raise UserError(f"{flag}={url}: cannot reach {server}: {e.strerror or e}") from None


def is_dir(p) -> bool:
    return path(p).is_dir()


def exists(p) -> bool:
    return path(p).exists()


def listdir(p) -> list[str]:
    """Names in a directory (empty for a missing one: on a bucket an empty directory does not
    exist)."""
    p = path(p)
    try:
        return sorted(child.name for child in p.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def files(root) -> list[epath.Path]:
    """Every file below ``root``, recursively, in name order."""
    root = path(root)
    out = []
    for child in sorted(root.iterdir(), key=lambda c: c.name):
        out.extend(files(child) if child.is_dir() else [child])
    return out


def remove_tree(p) -> None:
    """Removes a file or a directory tree if it exists."""
    p = path(p)
    if not is_remote(p):
        if os.path.islink(p) or os.path.isfile(p):
            os.remove(p)
        elif os.path.lexists(p):
            shutil.rmtree(p)
        return
    if p.exists():
        if p.is_dir():
            p.rmtree()
        else:
            p.unlink()


def move_tree(src, dst, last: str | None = None) -> None:
    """Renames directory ``src`` to ``dst`` (which must not exist). Locally one atomic rename;
    on a bucket a copy of each object then a delete of ``src``, the file named ``last`` (a
    marker such as ``ppsn.json``) copied after every other one: ``dst`` holds the marker only
    when it is complete, and ``src`` stays whole until then."""
    src, dst = path(src), path(dst)
    if not is_remote(src) and not is_remote(dst):
        os.rename(src, dst)
        return
    items = [f for f in files(src)]
    items.sort(key=lambda f: os.fspath(f.relative_to(src)) == last)
    for f in items:
        copy_file(f, dst / f.relative_to(src))
    remove_tree(src)


def write_new(p, data: bytes) -> bool:
    """Writes file ``p`` only if it does not exist (atomically: of two writers one wins);
    returns whether it did. Locally ``O_EXCL``; in a bucket an ``ifGenerationMatch=0``
    upload (epath has no exclusive mode)."""
    p = path(p)
    if not is_remote(p):
        try:
            fd = os.open(os.fspath(p), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    from etils.epath.backend import fsspec_backend

    try:
        fsspec_backend.fs(os.fspath(p)).pipe_file(os.fspath(p), data, mode="create")
    except FileExistsError:
        return False
    return True


def copy_file(src, dst) -> None:
    """Copies one file, either side local or in a bucket."""
    src, dst = path(src), path(dst)
    if not is_remote(dst):
        dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())


def upload_tree(local_dir, dst) -> int:
    """Copies a local directory tree to ``dst`` (local or a bucket); returns the file count."""
    local_dir = os.fspath(local_dir)
    count = 0
    for root, _, names in os.walk(local_dir):
        for name in sorted(names):
            full = os.path.join(root, name)
            copy_file(full, path(join(os.fspath(dst), os.path.relpath(full, local_dir))))
            count += 1
    return count


class Mirror:
    """A file or directory written locally and kept in ``target``.

    For a local ``target`` :attr:`local` is the target itself and :meth:`push` does nothing.
    For a bucket, :attr:`local` is a temporary copy (a file seeded with the target's content,
    so appending continues a resumed run's file; a directory starts empty) and :meth:`push`
    copies what changed since the last push, at most once per ``interval`` seconds unless
    ``now``; :meth:`close` pushes and removes the copy. Only the process that owns the file
    should mirror it: a push replaces the object."""

    def __init__(self, target, directory: bool = False, interval: float = 30.0):
        self.target = absolute(target)
        self.remote = is_remote(self.target)
        self.directory = directory
        self.interval = interval
        self._pushed: dict[str, tuple] = {}
        self._last: float | None = None  # time.monotonic() of the last push; None: none yet
        if not self.remote:
            self.local = os.fspath(self.target)
            if directory:
                os.makedirs(self.local, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(self.local), exist_ok=True)
            return
        self._tmp = tempfile.mkdtemp(prefix="ppsn-mirror-")
        self.local = os.path.join(self._tmp, "d" if directory else self.target.name)
        if directory:
            os.makedirs(self.local)
        elif self.target.exists():
            with open(self.local, "wb") as f:
                f.write(self.target.read_bytes())
            self._pushed[self.local] = _signature(self.local)

    def push(self, now: bool = False) -> None:
        if not self.remote or (not now and self._last is not None
                               and time.monotonic() - self._last < self.interval):
            return  # the first push is always sent (monotonic() may count from a recent boot)
        self._last = time.monotonic()
        if not self.directory:
            self._push_file(self.local, self.target)
            return
        for root, _, names in os.walk(self.local):
            for name in names:
                full = os.path.join(root, name)
                self._push_file(full, self.target / os.path.relpath(full, self.local))

    def _push_file(self, local: str, target: epath.Path) -> None:
        if not os.path.exists(local):
            return
        signature = _signature(local)
        if self._pushed.get(local) != signature:
            with open(local, "rb") as f:
                target.write_bytes(f.read())
            self._pushed[local] = signature

    def close(self) -> None:
        if self.remote and os.path.isdir(self._tmp):
            try:
                self.push(now=True)
            finally:
                shutil.rmtree(self._tmp, ignore_errors=True)


def _signature(local: str) -> tuple:
    st = os.stat(local)
    return st.st_size, st.st_mtime_ns
