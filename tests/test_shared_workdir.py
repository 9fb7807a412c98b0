"""A multi-process run refuses a workdir its processes do not all see (two real processes)."""

import json
import os
import socket
import subprocess
import sys

from tests.conftest import REPO_ROOT


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_workdir_local_to_each_process_is_refused_and_a_shared_one_accepted(tmp_path):
    port = _port()
    procs = []
    for pid in range(2):
        env = {**os.environ, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
               "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(pid), "JAX_PLATFORMS": "cpu"}
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.shared_workdir_check",
                                       str(tmp_path)], cwd=REPO_ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    for i, r in enumerate(results):
        assert r["shared"] == "ok"
        # Every process stops with one line; process 1 did not see process 0's nonce.
        assert r["own"].startswith(f"error: --workdir={tmp_path / f'host{i}'} is not shared")
        assert "process 1 do not see what process 0 writes there; use a shared file system " \
               "or a gs:// bucket" in r["own"]
