"""Results do not depend on the device count or the process count.

Mixup is the exception: each device mixes its own shard (no batch crosses devices, as
PaddleVideo mixes each GPU's batch), so with mixup on the mixed pairs depend on how many
devices share the batch. 1 vs 8 devices is compared without mixup; 2 processes x 2 devices vs
1 x 4 (the same 4 shards) with it.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import portpicker

from tests.conftest import REPO_ROOT


def _env(devices, **extra):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _run(devices, *args, **extra):
    """The JSON line of each run ``tests.train.distributed_steps`` made."""
    out = subprocess.run([sys.executable, "-m", "tests.train.distributed_steps", *args],
                         env=_env(devices, **extra), cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_one_device_and_eight_devices_give_the_same_loss():
    one, eight = _run(8, "--mesh_devices", "1,8", "--mixup_alpha", "0")
    assert one["devices"] == 1 and eight["devices"] == 8
    assert eight["parts"] == 8 and eight["parts_match_whole"]  # 8 parts = the batch whole
    # The first loss uses BatchNorm statistics of the whole batch on both; later ones differ
    # by float summation order only, which random labels without mixup amplify ~5x per step
    # (observed: 7e-7, 4e-6, 5e-5).
    assert abs(one["losses"][0] - eight["losses"][0]) < 1e-5
    np.testing.assert_allclose(one["losses"], eight["losses"], rtol=0, atol=2e-4)
    assert one["losses"][0] != one["losses"][-1]  # the steps really trained
    np.testing.assert_allclose(one["param_checksum"], eight["param_checksum"], rtol=1e-5)


@pytest.mark.slow
def test_two_processes_match_one_process_with_four_devices():
    (single,) = _run(4)
    port = portpicker.pick_unused_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tests.train.distributed_steps"], cwd=REPO_ROOT,
        env=_env(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=2,
                 JAX_PROCESS_ID=i),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    assert sorted(r["process"] for r in results) == [0, 1]
    for r in results:
        assert r["devices"] == 4 and r["parts"] == 2 and r["parts_match_whole"]
        np.testing.assert_allclose(r["losses"], single["losses"], rtol=0, atol=1e-5)
