import jax
import jax.numpy as jnp
import numpy as np

from ppsn import parallel
from ppsn.recipe import pptsn_config
from ppsn.train import steps, tasks


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
