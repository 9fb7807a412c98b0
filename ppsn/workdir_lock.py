"""One run at a time per workdir: a lock file that names its holder and never gets stuck.

A training run holds ``WORKDIR/ppsn.lock`` (:data:`LOCK_FILE`) from the end of its pre-flight
to its end; test mode holds ``OUTPUT.ppsn-lock`` beside the directory it writes. Only process 0
of a job takes it (:func:`job_lock`); when it is refused, every process stops. A second run is
refused with one line naming the holder: host, pid, start time, command.

The file is JSON: the holder and a heartbeat (the holder's wall clock, rewritten every
``heartbeat_s`` seconds by a thread). It is *stale*, and taken over with a warning, when

* the holder is on this host (and in this pid namespace) and its process is gone (its pid is
  not running, or now belongs to a process started at another time), e.g. a run killed with
  SIGKILL;
* the holder is on another host (a bucket or a network file system shared by several
  machines, or another container) and its heartbeat is older than ``STALE_BEATS`` beats: a
  lease. Hosts' clocks must agree to well within that (NTP does).

Paths go through :mod:`ppsn.paths` (``etils.epath``), so a ``gs://`` workdir works like a local
one; taking the lock is an exclusive create (:func:`ppsn.paths.write_new`: ``O_EXCL`` locally,
an ``ifGenerationMatch=0`` upload in a bucket), so of two runs starting together one wins.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid

from ppsn import paths
from ppsn.cli import UserError

log = logging.getLogger(__name__)

LOCK_FILE = "ppsn.lock"
OUTPUT_SUFFIX = ".ppsn-lock"  # beside an output directory that is replaced as a whole
HEARTBEAT_S = 30.0
STALE_BEATS = 4


class WorkdirInUse(UserError):
    """Another run holds the lock (the message names it)."""


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux ``/proc``, clock ticks since boot), None if
    unknown: with the pid it tells a process from a later one given the same pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    current = _proc_start(pid)
    return start is None or current is None or current == start


def _pid_namespace() -> str | None:
    """Which processes a pid names (containers on one host name the same host but each has
    its own pids): a holder in another namespace is judged by its heartbeat."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def is_stale(holder: dict, now: float, stale_after: float) -> bool:
    """Whether the lock of ``holder`` no longer protects a run (see the module doc)."""
    if (holder.get("host") == socket.gethostname()
            and holder.get("pid_namespace") == _pid_namespace()):
        return not _alive(int(holder.get("pid", -1)), holder.get("pid_start"))
    return now - float(holder.get("heartbeat", 0)) > stale_after


def read_holder(lock_path, tries: int = 3) -> dict | None:
    """The holder; None if there is no lock file, {} if it cannot be read as one. A bucket
    read that overlaps the holder's rewrite can come back torn (the client reads the object's
    size, then that many bytes of the newer, longer object): it is read again before the
    file counts as unreadable."""
    path = paths.path(lock_path)
    for attempt in range(tries):
        try:
            holder = json.loads(path.read_bytes())
            return holder if isinstance(holder, dict) else {}
        except FileNotFoundError:
            return None
        except ValueError:
            if attempt + 1 < tries:
                time.sleep(0.05)
    return {}


def describe(holder: dict) -> str:
    command = holder.get("command", "?")
    command = command if len(command) <= 160 else command[:157] + "..."
    return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started "
            f"{holder.get('started', '?')}: {command}")


class WorkdirLock:
    """The lock file ``lock_path``; ``what`` names the protected thing in the refusal
    (e.g. ``--workdir=DIR``). :meth:`acquire` / :meth:`release`, or a context manager."""

    def __init__(self, lock_path, what: str, heartbeat_s: float = HEARTBEAT_S):
        self.path = paths.absolute(lock_path)
        self.what = what
        self.heartbeat_s = heartbeat_s
        self.stale_after = STALE_BEATS * heartbeat_s
        self.record = {
            "host": socket.gethostname(), "pid": os.getpid(), "pid_start": _proc_start(os.getpid()),
            "pid_namespace": _pid_namespace(),
            "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "token": uuid.uuid4().hex, "heartbeat": time.time()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> "WorkdirLock":
        for _ in range(3):
            if self._create():
                self._thread = threading.Thread(target=self._beat, daemon=True,
                                                name="ppsn-workdir-lock")
                self._thread.start()
                return self
            holder = self._read()
            if holder is None:
                continue  # released meanwhile
            if not self._stale(holder):
                raise WorkdirInUse(f"{self.what} is in use by another run ({describe(holder)}); "
                                   f"wait for it to end or use another directory (lock file "
                                   f"{self.path})")
            log.warning("taking over the stale lock of %s (%s)", self.what, describe(holder))
            self._remove_if(holder.get("token"))
        raise WorkdirInUse(f"{self.what}: another run is taking its lock {self.path} at the "
                           "same moment; try again")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self._remove_if(self.record["token"])

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    # ------------------------------------------------------------------------------------------

    def _text(self) -> bytes:
        return json.dumps(self.record, indent=2).encode()

    def _create(self) -> bool:
        paths.makedirs(self.path.parent)
        return paths.write_new(self.path, self._text())

    def _read(self) -> dict | None:
        return read_holder(self.path)

    def _stale(self, holder: dict) -> bool:
        if holder:
            return is_stale(holder, time.time(), self.stale_after)
        try:  # unreadable (a holder killed while writing it): stale once old enough
            mtime = self.path.stat().mtime
        except (OSError, AttributeError):
            return False
        return time.time() - float(mtime) > self.stale_after

    def _remove_if(self, token) -> None:
        holder = self._read()
        if holder is not None and holder.get("token") == token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _write(self) -> None:
        """Rewrites the lock (a reader never sees half of it: a local file is replaced by a
        rename; a bucket object appears whole)."""
        if paths.is_remote(self.path):
            self.path.write_bytes(self._text())
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(self._text())
        os.replace(tmp, self.path)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                holder = self._read()
                if not holder or holder.get("token") != self.record["token"]:
                    log.error("the lock of %s was taken by another run (%s): this run no longer "
                              "holds it", self.what, describe(holder or {}))
                    return
                self.record["heartbeat"] = time.time()
                self._write()
            except Exception as e:  # a network hiccup: the next beat tries again
                log.warning("could not renew the lock %s: %s", self.path, e)


@contextlib.contextmanager
def job_lock(lock_path, what: str, heartbeat_s: float = HEARTBEAT_S):
    """The lock held by process 0 of the job for the duration; every process raises
    :class:`WorkdirInUse` when process 0 is refused."""
    import jax

    lock, error = None, None
    if jax.process_index() == 0:
        try:
            lock = WorkdirLock(lock_path, what, heartbeat_s).acquire()
        except WorkdirInUse as e:
            error = e
    if jax.process_count() > 1:
        import numpy as np
        from jax.experimental import multihost_utils

        refused = int(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
        if refused and error is None:
            error = WorkdirInUse(f"{what} is in use by another run (process 0's error line "
                                 "names it)")
    if error is not None:
        raise error
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


def train_lock_path(workdir) -> str:
    return paths.join(workdir, LOCK_FILE)


def output_lock_path(output_dir) -> str:
    return os.fspath(paths.absolute(output_dir)).rstrip("/") + OUTPUT_SUFFIX
