"""One run per workdir: a second run is refused naming the holder; a killed run's lock, or a
lease whose heartbeat stopped on another host, does not block."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ppsn import paths, workdir_lock
from ppsn.workdir_lock import WorkdirInUse, WorkdirLock
from tests.conftest import REPO_ROOT


def _digest(root):
    return {p: (root / p).read_bytes() for p in sorted(os.listdir(root))}


def test_a_second_run_is_refused_naming_the_holder_and_writes_nothing(toy_dir, tmp_path):
    """``ppsn.main`` on a workdir whose lock another process holds: one line, exit 2, naming
    host, pid, start time and command; the workdir stays byte-identical."""
    from tests.train.test_loop import _tiny_flags

    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text('{"earlier": "run"}')
    (workdir / "train.log").write_text("an earlier run's log\n")
    with WorkdirLock(workdir_lock.train_lock_path(workdir), f"--workdir={workdir}") as held:
        before = _digest(workdir)
        done = subprocess.run(_tiny_flags(toy_dir, workdir), cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 2, done.stderr[-2000:]
        line = done.stderr.strip().splitlines()[-1]
        assert "Traceback" not in done.stderr
        assert line.startswith(f"error: --workdir={workdir} is in use by another run (host "
                               f"{socket.gethostname()}, pid {os.getpid()}, started "
                               f"{held.record['started']}: "), line
        assert "pytest" in line or "python" in line
        assert _digest(workdir) == before
    assert sorted(os.listdir(workdir)) == ["config.json", "train.log"]  # released: no lock


_HOLD = """
import sys, time
from ppsn.workdir_lock import WorkdirLock
WorkdirLock(sys.argv[1], "w").acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_the_lock_of_a_killed_run_does_not_block(tmp_path):
    lock = tmp_path / "ppsn.lock"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(lock)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(WorkdirInUse, match=rf"pid {proc.pid}, "):
            WorkdirLock(lock, "w").acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert json.loads(lock.read_text())["pid"] == proc.pid  # left behind by the killed run
    with WorkdirLock(lock, "w") as mine:
        assert json.loads(lock.read_text())["token"] == mine.record["token"]
    assert not lock.exists()


def _other_host_lease(lock, heartbeat):
    paths.path(lock).write_text(json.dumps({
        "host": "another-host", "pid": 1, "started": "2026-01-01 00:00:00 UTC",
        "command": "python -m ppsn.main ...", "token": "theirs", "heartbeat": heartbeat}))


def test_a_bucket_lease_blocks_while_its_heartbeat_runs_and_not_after(gcs_dir):
    lock = paths.join(gcs_dir, "run", workdir_lock.LOCK_FILE)
    _other_host_lease(lock, time.time())
    with pytest.raises(WorkdirInUse, match=r"in use by another run \(host another-host, pid 1, "
                                           r"started 2026-01-01 00:00:00 UTC: python -m ppsn"):
        WorkdirLock(lock, "--workdir=run").acquire()
    # Four missed beats: stale, taken over.
    _other_host_lease(lock, time.time() - workdir_lock.STALE_BEATS * workdir_lock.HEARTBEAT_S - 5)
    mine = WorkdirLock(lock, "--workdir=run", heartbeat_s=0.2).acquire()
    try:
        first = workdir_lock.read_holder(lock)
        assert first["token"] == mine.record["token"]
        deadline = time.time() + 30
        while workdir_lock.read_holder(lock)["heartbeat"] == first["heartbeat"]:
            assert time.time() < deadline, "the holder does not renew its lease"
            time.sleep(0.1)
        with pytest.raises(WorkdirInUse):  # a live holder (this process) blocks in a bucket too
            WorkdirLock(lock, "--workdir=run").acquire()
    finally:
        mine.release()
    assert not paths.exists(lock)


def test_test_mode_refuses_an_output_another_run_writes(toy_dir, tmp_path):
    from ppsn import test_mode
    from tests.test_preflight import _config, _save

    weights = _save(tmp_path / "r18", 18, 10)
    out = tmp_path / "out"
    with WorkdirLock(workdir_lock.output_lock_path(out), "the other run's output"):
        with pytest.raises(WorkdirInUse, match=rf"^the test output {out} is in use by another run "
                                               rf"\(host {socket.gethostname()}, pid {os.getpid()}"):
            test_mode.run_test(_config(toy_dir), weights, str(out))
    assert sorted(os.listdir(tmp_path)) == ["r18"]  # nothing written, the lock released
