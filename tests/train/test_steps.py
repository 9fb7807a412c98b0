import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppsn import parallel
from ppsn.recipe import pptsn_config
from ppsn.train import steps, tasks
from tests.conftest import REPO_ROOT


def _setup(amp):
    config = pptsn_config()
    config.model.depth, config.model.num_classes, config.amp = 18, 10, str(amp)
    config.num_epochs = 10
    task = tasks.Task(config)
    model = task.model
    variables = jax.tree.map(np.asarray, task.scratch_variables(0))
    cfg = steps.step_config(task, config, steps_per_epoch=10)
    mesh = parallel.make_mesh()
    train, evaluate = steps.jit_steps(cfg, mesh)
    state = jax.device_put(steps.create_state(variables, cfg.tx), parallel.replicated(mesh))
    data = np.random.default_rng(0)
    batch = {"frames": data.integers(0, 256, (4, 2, 32, 32, 3), dtype=np.uint8),
             "label": np.array([1, 2, 3, 4], np.int32), "mask": np.array([1, 1, 1, 0], bool)}
    return model, train, evaluate, state, batch, mesh


def test_bf16_compute_keeps_float32_state():
    model, train, _, state, batch, mesh = _setup(amp=True)
    assert model.dtype == jnp.bfloat16
    state, metrics = train(state, parallel.to_global(
        {k: batch[k] for k in ("frames", "label")}, mesh), jax.random.PRNGKey(0))
    assert np.isfinite(float(metrics["loss"]))
    for leaf in jax.tree.leaves((state.params, state.batch_stats, state.opt_state)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):  # (the schedule's step count is int32)
            assert leaf.dtype == jnp.float32
    assert int(state.step) == 1


def test_step_rng_comes_from_fold_in_of_the_step():
    _, train, _, state, batch, mesh = _setup(amp=False)
    b = parallel.to_global({k: batch[k] for k in ("frames", "label")}, mesh)
    a1, m1 = train(jax.tree.map(jnp.copy, state), b, jax.random.PRNGKey(0))
    a2, m2 = train(jax.tree.map(jnp.copy, state), b, jax.random.PRNGKey(0))
    _, m3 = train(jax.tree.map(jnp.copy, state), b, jax.random.PRNGKey(1))
    assert float(m1["loss"]) == float(m2["loss"])  # same rng and step: same mixup/dropout
    assert float(m1["loss"]) != float(m3["loss"])


def test_eval_step_counts_only_masked_examples():
    _, _, evaluate, state, batch, mesh = _setup(amp=False)
    sums = parallel.to_host(evaluate(state, parallel.to_global(batch, mesh)))
    assert float(sums["count"]) == 3.0
    assert 0.0 <= float(sums["top1"]) <= 3.0 and float(sums["loss"]) > 0


@pytest.fixture(scope="module")
def compiled_on_8_devices():
    """tests.train.compiled_step run on 8 CPU devices (the train step's HLO and one mixup)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    out = subprocess.run([sys.executable, "-m", "tests.train.compiled_step"], cwd=REPO_ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_compiled_step_moves_no_batch_between_devices(compiled_on_8_devices):
    """No all-gather, all-to-all or collective-permute; the all-reduces carry the gradients, the
    BatchNorm statistics (forward: mean and variance; backward: their two sums) and a few
    scalar metrics, whatever the batch size."""
    out = compiled_on_8_devices
    assert out["devices"] == 8
    small, large = out["batch8"], out["batch16"]
    for compiled in (small, large):
        assert set(compiled["ops"]) == {"all-reduce"}, compiled["ops"]
    assert small["all_reduce_bytes"] == large["all_reduce_bytes"]  # not the batch's size
    bound = out["grad_bytes"] + 2 * out["bn_stats_bytes"] + 1024
    assert out["grad_bytes"] <= small["all_reduce_bytes"] <= bound


def test_mixup_mixes_each_device_shard_within_itself(compiled_on_8_devices):
    mix = compiled_on_8_devices["mixup"]
    rows, partner, lam = mix["rows_per_device"], mix["partner"], mix["lam"]
    assert rows == 4 and 0 < lam < 1
    assert [p // rows for p in partner] == [i // rows for i in range(len(partner))]
    assert len({tuple(partner[i:i + rows]) for i in range(0, len(partner), rows)}) > 1
    # one lam for every example: row i is lam * i + (1 - lam) * partner
    np.testing.assert_allclose(mix["mixed"], [lam * i + (1 - lam) * p
                                              for i, p in enumerate(partner)], rtol=1e-6)


def test_without_a_mesh_the_whole_batch_is_one_shard():
    images = jnp.arange(8, dtype=jnp.float32)[:, None]
    mixed, labels_b, lam = steps.mixup_per_shard(images, jnp.arange(8), jax.random.PRNGKey(0),
                                                 0.2)
    np.testing.assert_allclose(mixed[:, 0], lam * np.arange(8) + (1 - lam) * np.asarray(labels_b),
                               rtol=1e-6)
    assert sorted(np.asarray(labels_b).tolist()) == list(range(8))
