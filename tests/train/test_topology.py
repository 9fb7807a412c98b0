"""Resume on another topology: the data position is global (batches of the global batch), so
a checkpoint written by P processes x D devices continues on P' x D' with the same next
batches; another global batch is refused with one line."""

import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import portpicker
import pytest

from ppsn import checkpoint, cli
from ppsn.data import datasets, loading
from ppsn.data.clips import ClipSpec
from ppsn.data.lists import ListFileSource
from tests.conftest import REPO_ROOT
from tests.train.test_loop import _tiny_flags

SPEC = ClipSpec("train", num_seg=1, short_size=40, target_size=32)


def test_the_next_global_batch_is_the_same_for_any_process_count(toy_dir):
    source = ListFileSource(str(toy_dir / "train_frames.list"), "frames", str(toy_dir), 10)
    global_batch, consumed = 8, 5  # past the first epoch (30 videos): reshuffled
    nexts = {}
    for processes in (1, 2, 4):
        rows = []
        for p in range(processes):
            ds = datasets.train_dataset(source, SPEC, global_batch // processes, seed=0,
                                        process_index=p, process_count=processes)
            it = loading.to_iterator(ds)
            it.set_state({"batches_consumed": consumed})  # what a checkpoint restores
            batch = next(it)
            rows += [(int(i), batch["frames"][k].tobytes()) for k, i in enumerate(batch["index"])]
            it.close()
        nexts[processes] = sorted(rows)
    assert len(nexts[1]) == global_batch
    assert nexts[1] == nexts[2] == nexts[4]  # the same videos, the same clips (crops, flips)


def test_another_global_batch_is_refused_with_one_line(tmp_path, toy_dir):
    source = ListFileSource(str(toy_dir / "train_frames.list"), "frames", str(toy_dir), 10)
    ds = datasets.train_dataset(source, SPEC, 8, seed=0)
    it = loading.to_iterator(ds)
    it.set_state({"batches_consumed": 3})
    state, rng = {"w": jnp.arange(4.0)}, jax.random.PRNGKey(0)
    ckpt = checkpoint.TrainCheckpointer(str(tmp_path), global_batch=8)
    ckpt.save(3, state, rng, it, {"task": "plain"})
    ckpt.wait()
    ckpt.close()
    position = json.loads((tmp_path / "checkpoints" / "3" / "position" / "metadata").read_text())
    assert position == {"batches_consumed": 3, "global_batch": 8, "samples_consumed": 24,
                        "process_count": 1}
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), (state, rng))
    other = checkpoint.TrainCheckpointer(str(tmp_path), global_batch=16)
    with pytest.raises(cli.ConfigError, match="global batch 8, this run has "
                                              "--config.batch_size=16"):
        other.restore(*abstract, loading.to_iterator(ds))
    other.close()
    same = checkpoint.TrainCheckpointer(str(tmp_path), global_batch=8)
    resumed = loading.to_iterator(ds)
    restored, _, step = same.restore(*abstract, resumed)
    same.close()
    assert step == 3 and json.loads(resumed.get_state()) == {"batches_consumed": 3}
    np.testing.assert_array_equal(restored["w"], state["w"])


def _run(toy_dir, workdir, processes, devices, max_steps):
    flags = _tiny_flags(toy_dir, workdir, num_epochs=2, max_steps=max_steps, validate=False,
                        checkpoint_every_steps=100)[1:]  # without the interpreter
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "PYTHON": sys.executable}
    if processes == 1:
        cmd = [sys.executable, *flags]
    else:
        cmd = ["bash", "launch/local.sh", "--processes", str(processes), "--devices_per_process",
               str(devices), "--", *flags[2:]]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout + done.stderr


def _run_2x2_and_sigterm_one(toy_dir, workdir, max_steps):
    """Two processes of 2 devices (as ``launch/local.sh`` starts them); SIGTERM to process 1
    alone once process 0 logged step 1. Returns each process's exit status and output."""
    flags = _tiny_flags(toy_dir, workdir, num_epochs=2, max_steps=max_steps, validate=False,
                        checkpoint_every_steps=100, log_interval=1)
    port = portpicker.pick_unused_port()
    procs, logs = [], []
    for i in range(2):
        env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
               "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
               "JAX_PROCESS_ID": str(i), "PPSN_CPUS": "1"}
        logs.append(open(workdir.parent / f"process{i}.out", "w+"))
        procs.append(subprocess.Popen(flags, cwd=REPO_ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE if i == 0 else logs[i],
                                      stderr=subprocess.STDOUT))
    lines = []
    for line in procs[0].stdout:
        lines.append(line)
        if "train step:1 " in line:
            procs[1].send_signal(signal.SIGTERM)
            break
    outs = ["".join(lines) + procs[0].communicate(timeout=300)[0]]
    procs[1].wait(timeout=300)
    logs[1].seek(0)
    outs.append(logs[1].read())
    for f in logs:
        f.close()
    return [p.returncode for p in procs], outs


@pytest.mark.slow
def test_2x2_resumes_as_1x4_and_that_as_2_processes(toy_dir, tmp_path):
    """The first run is stopped by a SIGTERM to one of its two processes between scheduled
    checkpoints: both agree on a step, save it and exit 143; it resumes as 1 x 4, and the first
    command, run again, continues from there as 2 x 2."""
    workdir = tmp_path / "run"
    codes, outs = _run_2x2_and_sigterm_one(toy_dir, workdir, 6)
    assert codes == [143, 143], "\n".join(out[-2000:] for out in outs)
    saved = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(saved) == 1 and 1 <= saved[0] <= 4, (saved, outs[0][-2000:])  # none scheduled
    step = saved[0]
    for out in outs:  # the same step on both processes
        assert sum(f"stopped at step {step} of 6 on a signal" in line
                   for line in out.splitlines()) == 1, out[-2000:]
    out = _run(toy_dir, workdir, 1, 4, step + 1)
    assert f"at step {step}" in out
    assert (f"data position: {step} global batches of 8 consumed by 2 processes, continued "
            "by 1") in out
    out = _run(toy_dir, workdir, 2, 2, 6)
    assert f"at step {step + 1}" in out
    assert (f"data position: {step + 1} global batches of 8 consumed by 1 processes, "
            "continued by 2") in out
    position = json.loads((workdir / "checkpoints" / "6" / "position" / "metadata").read_text())
    assert position == {"batches_consumed": 6, "global_batch": 8, "samples_consumed": 48,
                        "process_count": 2}
