"""Resume on another topology: the data position is global (batches of the global batch), so
a checkpoint written by P processes x D devices continues on P' x D' with the same next
batches; another global batch is refused with one line."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
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


def test_2x2_resumes_as_1x4_and_that_as_2_processes(toy_dir, tmp_path):
    workdir = tmp_path / "run"
    _run(toy_dir, workdir, 2, 2, 2)
    out = _run(toy_dir, workdir, 1, 4, 4)
    assert "at step 2" in out
    assert "data position: 2 global batches of 8 consumed by 2 processes, continued by 1" in out
    out = _run(toy_dir, workdir, 2, 2, 6)
    assert "at step 4" in out
    assert "data position: 4 global batches of 8 consumed by 1 processes, continued by 2" in out
    position = json.loads((workdir / "checkpoints" / "6" / "position" / "metadata").read_text())
    assert position == {"batches_consumed": 6, "global_batch": 8, "samples_consumed": 48,
                        "process_count": 2}
