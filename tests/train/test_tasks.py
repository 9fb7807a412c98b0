"""The three training objectives through one interface, and the loop's phases one by one."""

import multiprocessing

import jax
import numpy as np
import pytest

from ppsn import checkpoint, parallel, train_mode
from ppsn.recipe import toy_config
from ppsn.train import initialize, loop, tasks


def _config(mode="", teacher_checkpoint=""):
    config = toy_config()
    config.model.depth = 18
    config.num_epochs = 2
    config.distill.mode, config.distill.teacher_depth = mode, 18
    config.distill.teacher_checkpoint = teacher_checkpoint
    return config


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "best"
    model = initialize.build_model(_config())
    variables = jax.tree.map(np.asarray, initialize.scratch_variables(model, 7))
    checkpoint.save_variables(path, variables, {"depth": 18, "num_classes": 10})
    return str(path)


@pytest.mark.parametrize("mode", ["", "kd", "dml"])
def test_every_task_trains_evaluates_and_serves_a_plain_tsn(mode, teacher_dir, toy_step):
    config = _config(mode, teacher_dir if mode == "kd" else "")
    task = tasks.make_task(config)
    assert task.name == {"": "plain", "kd": "kd", "dml": "dml"}[mode]
    s = toy_step(task, config, task.initial_variables(), steps_per_epoch=5)
    train, evaluate, state, batch, mesh = s.train, s.evaluate, s.state, s.batch, s.mesh
    state, metrics = train(state, parallel.to_global(
        {k: batch[k] for k in ("frames", "label")}, mesh), jax.random.PRNGKey(0))
    m = parallel.to_host(metrics)
    for part in ("loss", "top1", "top5", "lr", "param_norm") + task.log_parts:
        assert np.isfinite(m[part]), part
    assert m["loss"] == pytest.approx(sum(m[p] for p in task.log_parts) if task.log_parts
                                      else m["ce"], rel=1e-5)
    # What is served is a plain TSN of the config's model, whatever the objective.
    served = task.serving_variables(state.params, state.batch_stats)
    plain = initialize.scratch_variables(initialize.build_model(config), 0)
    assert jax.tree.structure(served) == jax.tree.structure(plain)
    meta = task.meta()
    assert (meta["task"], meta["depth"], meta["num_classes"]) == (task.name, 18, 10)
    picked = tasks.serving_variables(
        {"params": state.params, "batch_stats": state.batch_stats}, meta["serving_key"])
    assert jax.tree.structure(picked) == jax.tree.structure(plain)
    rows = parallel.to_host(evaluate(state, parallel.to_global(batch, mesh)))
    assert rows["top1"].shape == (4,) and np.all(np.isfinite(rows["loss"]))


def test_phases_set_up_initialize_checkpoint_and_resume(toy_dir, tmp_path, monkeypatch):
    config = _config()
    config.data.data_prefix = str(toy_dir)
    config.data.train_list = f"{toy_dir}/train_frames.list"
    config.data.val_list = f"{toy_dir}/val_frames.list"
    config.data.generate_toy = False
    config.data.short_size, config.data.target_size = 40, 32
    config.batch_size, config.valid_batch_size = 8, 10
    workdir = str(tmp_path / "run")

    run = train_mode.setup(config, workdir)
    assert (run.steps_per_epoch, run.total_steps) == (30 // 8, 2 * (30 // 8))
    state, rng, start = loop.restore_or_initialize(run)
    assert start == 0 and int(state.step) == 0
    progress = loop.Progress(meter=loop.reporting.Meter(first_step=0), best_top1=-1.0)
    batch = next(run.data_iter)
    state, metrics = run.train_fn(state, parallel.to_global(
        {"frames": batch["frames"], "label": batch["label"]}, run.mesh), rng)
    progress.meter.values.append(metrics)
    loop.validate_and_keep_best(run, progress, state, done=1)
    assert progress.last_val["count"] == 20 and progress.best_top1 == progress.last_val["top1"]
    assert checkpoint.load_weights(workdir)[1]["path"].endswith("best")
    loop.save_checkpoint(run, progress, state, rng, done=1)
    run.ckpt.wait()
    saved = jax.device_get(state.params)
    next_batch = next(run.data_iter)
    run.ckpt.close()

    config.data.num_workers = 1  # from here: a worker pool for the train feed, one for validation
    again = train_mode.setup(config, workdir)
    state2, rng2, start2 = loop.restore_or_initialize(again)
    assert start2 == 1 and int(state2.step) == 1
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(jax.device_get(state2.params))):
        np.testing.assert_array_equal(a, b)
    # The data iterator resumes where the checkpoint was taken.
    np.testing.assert_array_equal(next(again.data_iter)["index"], next_batch["index"])

    # Through the end of the first epoch: validation runs while the train feed's workers are
    # stopped (one pool at a time), and the feed restarts after it.
    validate, pools = loop.validation.validate, []

    def observed(*args, **kwargs):
        pools.append(len(multiprocessing.active_children()))  # the train feed's live workers
        return validate(*args, **kwargs)

    monkeypatch.setattr(loop.validation, "validate", observed)
    progress2 = loop.Progress(meter=loop.reporting.Meter(first_step=1), best_top1=2.0)
    state2 = loop.train_steps(again, progress2, state2, rng2, 1, 4)
    assert pools == [0] and int(state2.step) == 4  # validated after step 3, then step 4
    again.ckpt.close()
