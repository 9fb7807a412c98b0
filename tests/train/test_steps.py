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
from ppsn.train import optim, steps, tasks
from tests.conftest import REPO_ROOT
from tests.train.conftest import build_toy_step


def _setup(amp, **overrides):
    config = pptsn_config()
    config.model.depth, config.model.num_classes, config.amp = 18, 10, str(amp)
    config.num_epochs = 10
    for key, value in overrides.items():
        section, field = key.split(".")
        config[section][field] = value
    task = tasks.Task(config)
    s = build_toy_step(task, config, jax.tree.map(np.asarray, task.scratch_variables(0)))
    return task.model, s.train, s.evaluate, s.state, s.batch, s.mesh


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


def _loss_at_step(train, state, batch, rng, step):
    """The loss of one train step taken from ``state`` as if it were step ``step`` (the loss
    is computed before the update, so only the step's randomness can change it)."""
    at = jax.tree.map(jnp.copy, state).replace(step=jnp.asarray(step, jnp.int32))
    return float(train(at, batch, rng)[1]["loss"])


def test_the_step_number_changes_the_mixup_and_nothing_else():
    """The step's randomness is ``fold_in(rng, step)``: with dropout off, the only randomness
    is mixup's, so the same rng at another step gives another loss (another lambda and
    permutation), the same step gives the same loss, and without mixup the step changes
    nothing."""
    _, train, _, state, batch, mesh = _setup(amp=False, **{"model.dropout_rate": 0.0})
    b = parallel.to_global({k: batch[k] for k in ("frames", "label")}, mesh)
    rng = jax.random.PRNGKey(0)
    at_0, again_0, at_5 = (_loss_at_step(train, state, b, rng, s) for s in (0, 0, 5))
    assert at_0 == again_0
    assert at_0 != at_5
    # Another base rng at the same step: another mixup too.
    assert at_0 != _loss_at_step(train, state, b, jax.random.PRNGKey(1), 0)

    _, train, _, state, batch, mesh = _setup(amp=False, **{"model.dropout_rate": 0.0,
                                                          "loss.mixup_alpha": 0.0})
    b = parallel.to_global({k: batch[k] for k in ("frames", "label")}, mesh)
    assert _loss_at_step(train, state, b, rng, 0) == _loss_at_step(train, state, b, rng, 5)


def test_eval_rows_of_the_real_examples_do_not_depend_on_padding():
    """Validation's per-row scores (``jit_eval``): a real row's loss / top-1 / top-5 are its
    own, whatever padded rows (any frames, any label, padding's -1 included) share its batch;
    the rows come back with their labels and mask, which the ledger drops padding by
    (tests/evaluation/test_scoring.py)."""
    _, _, evaluate, state, batch, mesh = _setup(amp=False)
    real = {"frames": batch["frames"][:3], "label": batch["label"][:3],
            "mask": np.ones(3, bool)}
    data = np.random.default_rng(1)

    def padded(label):
        return {"frames": np.concatenate([real["frames"], data.integers(
                    0, 256, (5, 2, 32, 32, 3), dtype=np.uint8)]),
                "label": np.concatenate([real["label"], np.full(5, label, np.int32)]),
                "mask": np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)}

    def rows(b):
        return parallel.to_host(evaluate(state, parallel.to_global(b, mesh)))

    alone = rows(real)
    assert alone["loss"].shape == (3,) and np.all(alone["loss"] > 0)
    for label in (-1, 0, 9):  # padding's -1, and labels the padded rows' logits may favour
        got = rows(padded(label))
        np.testing.assert_array_equal(got["label"], padded(label)["label"])
        np.testing.assert_array_equal(got["mask"], padded(label)["mask"])
        for key in ("loss", "top1", "top5"):
            np.testing.assert_allclose(got[key][:3], alone[key], rtol=1e-5,
                                       err_msg=f"{key} with padded labels {label}")


@pytest.fixture(scope="module")
def compiled_on_8_devices(tmp_path_factory):
    """tests.train.compiled_step run on 8 CPU devices (the train step's HLO and one mixup)."""
    dump = tmp_path_factory.mktemp("hlo")
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=8 "
               f"--xla_dump_to={dump} --xla_dump_hlo_pass_re=spmd-partitioning")
    out = subprocess.run([sys.executable, "-m", "tests.train.compiled_step", str(dump)],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
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


def test_bf16_gradients_are_all_reduced_in_float32(compiled_on_8_devices):
    """Under bf16 no all-reduce carries bf16, neither right after SPMD partitioning (where
    XLA's partitioner would put a bf16 reduction of the bf16 weight gradients) nor compiled;
    the float32 all-reduces carry at least the gradients."""
    out = compiled_on_8_devices
    for sync_bn in (True, False):
        step = out[f"bf16_sync_bn_{sync_bn}"]
        for program in ("partitioned", "compiled"):
            found = step[program]
            assert set(found) == {"all-reduce"}, found
            assert set(found["all-reduce"]) == {"f32"}, (sync_bn, program, found)
            assert found["all-reduce"]["f32"]["bytes"] >= out["grad_bytes"]


def test_per_device_batch_norm_keeps_only_the_step_all_reduces(compiled_on_8_devices):
    """``model.sync_bn=False``: no per-layer statistics all-reduces (at most 10 after XLA
    combines them, and under a quarter of the global-statistics step's), and about
    ``bn_stats_bytes`` fewer bytes (the forward's statistics and their backward)."""
    out = compiled_on_8_devices
    sync = out["bf16_sync_bn_True"]["partitioned"]["all-reduce"]["f32"]
    local = out["bf16_sync_bn_False"]["partitioned"]["all-reduce"]["f32"]
    compiled = out["bf16_sync_bn_False"]["compiled"]["all-reduce"]["f32"]
    assert compiled["count"] <= 10
    assert compiled["count"] <= out["bf16_sync_bn_True"]["compiled"]["all-reduce"]["f32"][
        "count"] / 4
    # before combining: one per gradient leaf and the scalars, no statistics
    assert local["count"] < sync["count"]
    assert local["bytes"] <= sync["bytes"] - out["bn_stats_bytes"]


@pytest.mark.parametrize("sync_bn", [True, False])
def test_batch_norm_statistics_per_device_or_global(compiled_on_8_devices, sync_bn):
    """Each device's new statistics in a training call on its shard of 2 rows: with sync_bn
    those of a 1-device call on the whole batch, else those of a 1-device call on the shard."""
    stats = compiled_on_8_devices[f"bn_statistics_sync_bn_{sync_bn}"]
    sharded = np.asarray(stats["sharded"])
    want = ([stats["whole_alone"]] * 8 if sync_bn else stats["shards_alone"])
    np.testing.assert_allclose(sharded, np.asarray(want), rtol=1e-4, atol=1e-7)
    shards = np.asarray(stats["shards_alone"])
    assert np.abs(shards - shards.mean(axis=0)).max() > 1e-4  # the shards do differ


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


def test_the_train_program_does_not_depend_on_the_schedule():
    """The schedule's numbers are an argument of the train step: runs of another length or
    learning rate (same shapes) compile the same program, and load it from the persistent
    compilation cache; the step still follows each run's own schedule."""
    def lowered(**changes):
        config = pptsn_config()
        config.model.depth, config.model.num_classes, config.num_epochs = 18, 10, 10
        for key, value in changes.items():
            *section, field = key.split(".")
            (config[section[0]] if section else config)[field] = value
        task = tasks.Task(config)
        cfg = steps.step_config(task, config, steps_per_epoch=7)
        state = jax.eval_shape(lambda: steps.create_state(task.scratch_variables(0), cfg.tx))
        batch = {"frames": jax.ShapeDtypeStruct((4, 1, 32, 32, 3), np.uint8),
                 "label": jax.ShapeDtypeStruct((4,), np.int32)}
        consts = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                              steps.step_constants(cfg))
        text = steps.jit_train(cfg, parallel.make_mesh()).lower(
            state, batch, jax.ShapeDtypeStruct((2,), np.uint32), consts).as_text()
        return text, cfg

    base, cfg = lowered()
    for changes in ({"num_epochs": 30}, {"optim.base_lr": 0.5, "optim.warmup_epochs": 0}):
        text, other = lowered(**changes)
        assert text == base, changes
        assert other.schedule_values != cfg.schedule_values
    # The traced schedule is the one the run logs (and PaddleVideo's, tests/train/test_optim.py).
    for step in (0, 3, 20, 69):
        assert float(optim.schedule_from(jax.tree.map(jnp.asarray, cfg.schedule_values))(step)) \
            == pytest.approx(float(cfg.schedule(step)), rel=1e-6)
