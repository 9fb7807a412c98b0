"""Distillation: the losses, a frozen kd teacher inside the jitted step, DML, and real toy runs."""

import hashlib
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppsn import checkpoint, parallel
from ppsn.checkpoint import load_weights
from ppsn.recipe import pptsn_config
from ppsn.data.transforms import normalize
from ppsn.train import initialize, losses, optim, tasks
from tests.conftest import REPO_ROOT, zero_variables
from tests.train.conftest import build_toy_step
from tests.train.test_loop import _tiny_flags


def test_kd_loss_is_hintons_kl_and_reaches_only_the_student():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(3, 7)).astype(np.float32), rng.normal(size=(3, 7)).astype(np.float32)
    temp = 3.0

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p_t, p_s = softmax(t / temp), softmax(s / temp)
    expected = temp ** 2 * np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=-1)
    np.testing.assert_allclose(losses.kd_loss(s, t, temp), expected, rtol=1e-5)
    g_t = jax.grad(lambda t_: losses.kd_loss(s, t_, temp).sum())(t)
    assert not np.any(np.asarray(g_t))  # the teacher gets no gradient
    assert float(losses.kd_loss(t, t, temp).max()) == pytest.approx(0.0, abs=1e-6)
    sym = losses.dml_loss(s, t, temp)
    np.testing.assert_allclose(sym, losses.dml_loss(t, s, temp), rtol=1e-6)
    g_a, g_b = jax.grad(lambda a, b: losses.dml_loss(a, b, temp).sum(), argnums=(0, 1))(s, t)
    assert np.any(np.asarray(g_a)) and np.any(np.asarray(g_b))  # DML: both learn


def test_bad_distill_config_is_refused(tmp_path):
    config = pptsn_config()
    config.distill.mode = "hinton"
    with pytest.raises(ValueError, match="kd"):
        tasks.task_class(config)
    config.distill.mode = "kd"
    with pytest.raises(ValueError, match="teacher_checkpoint"):
        tasks.task_class(config)
    config.model.num_classes, config.distill.teacher_depth = 10, 18
    config.distill.teacher_checkpoint = str(tmp_path / "missing")
    teacher = tasks.teacher_model(config, jnp.float32)
    with pytest.raises(FileNotFoundError, match="convert"):
        tasks.load_teacher_variables(config, teacher)
    checkpoint.save_variables(tmp_path / "five", zero_variables(18, 5),
                              {"depth": 18, "num_classes": 5})
    config.distill.teacher_checkpoint = str(tmp_path / "five")
    with pytest.raises(ValueError, match="5 classes"):
        tasks.load_teacher_variables(config, teacher)
    config.distill.teacher_depth = 34
    with pytest.raises(ValueError, match="ResNet18-vd"):
        tasks.load_teacher_variables(config, tasks.teacher_model(config, jnp.float32))


def _kd_setup(mode):
    config = pptsn_config()
    config.model.depth, config.model.num_classes, config.num_epochs = 18, 10, 10
    config.distill.mode, config.distill.teacher_depth = mode, 34
    config.distill.temperature, config.distill.weight = 4.0, 1.0
    teacher = tasks.teacher_model(config, jnp.float32)
    t_vars = jax.tree.map(np.asarray, initialize.scratch_variables(teacher, 1))
    if mode == "kd":
        task = tasks.KdTask(config, teacher_variables=t_vars)
        variables = jax.tree.map(np.asarray, task.scratch_variables(0))
    else:
        task = tasks.DmlTask(config)
        variables = tasks.pair_variables(
            jax.tree.map(np.asarray, initialize.scratch_variables(task.model, 0)), t_vars)
    s = build_toy_step(task, config, variables)
    return s.train, s.evaluate, s.state, s.batch, s.mesh, t_vars, variables


def test_kd_step_keeps_the_teacher_frozen_and_out_of_the_optimizer():
    train, evaluate, state, batch, mesh, t_vars, _ = _kd_setup("kd")
    plain = optim.make_optimizer(pptsn_config().optim, state.params, 10, 10)
    # Same optimizer-state structure as plain training: nothing of the teacher in it.
    assert (jax.tree.structure(state.opt_state)
            == jax.tree.structure(plain.init(state.params)))
    b = parallel.to_global({k: batch[k] for k in ("frames", "label")}, mesh)
    for _ in range(3):
        state, metrics = train(state, b, jax.random.PRNGKey(0))
    m = parallel.to_host(metrics)
    assert m["loss"] == pytest.approx(m["ce"] + m["kd"], rel=1e-5)
    assert m["kd"] > 0
    (after,) = jax.device_get(train.constants)
    for a, b_ in zip(jax.tree.leaves(t_vars), jax.tree.leaves(after)):
        assert a.tobytes() == np.asarray(b_).tobytes()  # bit for bit
    rows = parallel.to_host(evaluate(state, parallel.to_global(batch, mesh)))
    assert rows["top1"].shape == (4,) and np.all(np.isfinite(rows["loss"]))


def test_dml_step_trains_both_models():
    train, evaluate, state, batch, mesh, _, before = _kd_setup("dml")
    b = parallel.to_global({k: batch[k] for k in ("frames", "label")}, mesh)
    state, metrics = train(state, b, jax.random.PRNGKey(0))
    m = parallel.to_host(metrics)
    assert m["loss"] == pytest.approx(m["ce"] + m["ce_teacher"] + m["dml"], rel=1e-5)
    params = jax.device_get(state.params)
    for who in (tasks.STUDENT, tasks.TEACHER):
        moved = [not np.array_equal(a, b_) for a, b_ in zip(
            jax.tree.leaves(before["params"][who]), jax.tree.leaves(params[who]))]
        assert all(moved), who
    rows = parallel.to_host(evaluate(state, parallel.to_global(batch, mesh)))
    assert rows["top1"].shape == (4,) and np.all(np.isfinite(rows["loss"]))


def _tree_digest(directory):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(directory)):
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


def _run(cmd, timeout=900):
    out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


def test_a_kd_step_pulls_the_students_logits_toward_the_teachers():
    """The mechanism, not an anecdote: from the same student, one real kd train step brings
    its logits closer to a (confident) teacher's than one plain step does, and closer than
    they were. (The toy comparison over several seeds is in the README.)"""
    config = pptsn_config()
    config.model.depth, config.model.num_classes, config.model.dropout_rate = 18, 10, 0.0
    config.num_epochs, config.loss.mixup_alpha = 10, 0.0  # no randomness in the step
    config.optim.warmup_epochs, config.optim.base_lr = 0, 0.05
    config.distill.mode, config.distill.teacher_depth = "kd", 18
    config.distill.temperature, config.distill.weight = 4.0, 10.0
    teacher = tasks.teacher_model(config, jnp.float32)
    t_vars = jax.tree.map(np.asarray, initialize.scratch_variables(teacher, 1))
    t_vars["params"]["fc"]["kernel"] = t_vars["params"]["fc"]["kernel"] * 50  # an opinion
    student = jax.tree.map(np.asarray, initialize.scratch_variables(teacher, 0))
    data = np.random.default_rng(0)
    frames = data.integers(0, 256, (8, 2, 32, 32, 3), dtype=np.uint8)
    labels = data.integers(0, 10, 8).astype(np.int32)
    kd_task = tasks.KdTask(config, teacher_variables=t_vars)

    @jax.jit
    def kd_term(params, batch_stats):
        targets = losses.Targets.unmixed(jnp.asarray(labels))
        _, (_, _, parts) = kd_task.loss(params, batch_stats, normalize(frames), targets,
                                        jax.random.PRNGKey(0), (t_vars,))
        return parts["kd"]

    def distance(params, batch_stats):
        """kd's own term: T^2 KL(teacher || student) on this batch (train-mode BN)."""
        return float(kd_term(params, batch_stats))

    def one_step(task):
        s = build_toy_step(task, config, student)
        state, _ = s.train(s.state, parallel.to_global({"frames": frames, "label": labels},
                                                       s.mesh), jax.random.PRNGKey(0))
        return jax.device_get(state.params), jax.device_get(state.batch_stats)

    before = distance(student["params"], student["batch_stats"])
    after_kd = distance(*one_step(kd_task))
    after_plain = distance(*one_step(tasks.Task(config)))
    assert after_kd < 0.9 * before and after_kd < 0.9 * after_plain, (before, after_kd,
                                                                     after_plain)


@pytest.mark.slow
def test_toy_kd_run_logs_both_losses_and_leaves_the_teacher_untouched(toy_dir, tmp_path):
    """A real kd run (the toy distill config's path) from a teacher checkpoint: the log shows
    ce and kd, the student is served, and the teacher on disk stays bit-identical."""
    teacher_dir = tmp_path / "teacher"
    t_vars = jax.tree.map(np.asarray, initialize.scratch_variables(
        tasks.teacher_model(pptsn_config(), jnp.float32).clone(depth=18, num_classes=10), 1))
    checkpoint.save_variables(teacher_dir, t_vars, {"depth": 18, "num_classes": 10})
    digest = _tree_digest(teacher_dir)
    workdir = tmp_path / "kd"
    cmd = _tiny_flags(toy_dir, workdir, num_epochs=1, **{
        "distill.mode": "kd", "distill.teacher_depth": 18,
        "distill.teacher_checkpoint": teacher_dir})
    cmd[cmd.index("--config=configs/pptsn_toy.py")] = "--config=configs/pptsn_toy_distill.py"
    log = _run(cmd)
    assert "kd distillation: student ResNet18-vd, frozen teacher ResNet18-vd" in log
    step_lines = [line for line in log.splitlines() if "train step:" in line]
    assert step_lines and all(" ce: " in line and " kd: " in line for line in step_lines)
    best, meta = checkpoint.load_variables(workdir / "best")
    assert meta["task"] == "kd" and meta["depth"] == 18
    assert jax.tree.structure(best) == jax.tree.structure(t_vars)  # the student alone
    assert _tree_digest(teacher_dir) == digest


def test_dml_run_checkpoints_both_and_serves_the_student(toy_dir, tmp_path):
    workdir = tmp_path / "dml"
    _run(_tiny_flags(toy_dir, workdir, num_epochs=1, **{"distill.mode": "dml",
                                                        "distill.teacher_depth": 18}))
    from tests.train.test_loop import _final_state

    steps_done = sorted(int(p) for p in os.listdir(workdir / "checkpoints") if p.isdigit())
    state = _final_state(workdir, steps_done[-1])["state"]
    assert set(state["params"]) == {tasks.STUDENT, tasks.TEACHER}
    only_checkpoints = tmp_path / "only_checkpoints"
    only_checkpoints.mkdir()
    (only_checkpoints / "checkpoints").symlink_to(workdir / "checkpoints")
    variables, meta = load_weights(str(only_checkpoints))
    assert meta["serving_key"] == "student" and meta["task"] == "dml"
    assert "fc" in variables["params"] and "student" not in variables["params"]
    best, _ = checkpoint.load_variables(workdir / "best")
    assert set(best["params"]) == set(variables["params"])  # the best model is the student
