"""The real training loop on the toy data: resume, learning, failure handling, init."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ppsn import checkpoint
from ppsn.models import TSN
from ppsn.train import initialize
from tests.conftest import REPO_ROOT


def _tiny_flags(toy_dir, workdir, **overrides):
    flags = {
        "data.data_prefix": toy_dir, "data.train_list": f"{toy_dir}/train_frames.list",
        "data.val_list": f"{toy_dir}/val_frames.list", "data.generate_toy": False,
        "data.short_size": 40, "data.target_size": 32, "batch_size": 8, "valid_batch_size": 8,
        "num_epochs": 6, "checkpoint_every_steps": 2, "keep_checkpoints": 20, "log_interval": 3,
    }
    flags.update(overrides)
    return ([sys.executable, "-m", "ppsn.main", "--config=configs/pptsn_toy.py",
             f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in flags.items()])


def _final_state(workdir, step):
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(os.path.join(workdir, "checkpoints", str(step), "state"))


TOTAL = 6 * (30 // 8)  # 6 epochs of 3 steps


@pytest.fixture(scope="module")
def straight(toy_dir, tmp_path_factory):
    """The workdir of an uninterrupted run, to compare interrupted ones with."""
    workdir = tmp_path_factory.mktemp("straight")
    cmd = _tiny_flags(toy_dir, workdir, validate=False)
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir


def _assert_same_final_state(straight, workdir):
    a, b = _final_state(straight, TOTAL), _final_state(workdir, TOTAL)
    assert int(a["state"]["step"]) == int(b["state"]["step"]) == TOTAL
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 100
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sigterm_between_checkpoints_saves_that_step_and_resumes_bit_identical(
        toy_dir, tmp_path, straight):
    workdir = tmp_path / "preempted"
    cmd = _tiny_flags(toy_dir, workdir, validate=False, checkpoint_every_steps=100,
                      log_interval=1)
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # training has begun: its first step's line
        lines.append(line)
        if "train step:1 " in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=300)
    out = "".join(lines) + rest
    assert proc.returncode == 143, out[-3000:]
    stopped = [line for line in out.splitlines() if "stopped at step" in line]
    assert len(stopped) == 1, out[-3000:]
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert len(saved) == 1 and 1 <= saved[0] < TOTAL, (saved, out[-3000:])  # none scheduled
    assert f"stopped at step {saved[0]} of {TOTAL}" in stopped[0]
    assert os.path.join("checkpoints", str(saved[0])) in stopped[0]

    resumed = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {saved[0]}" in resumed.stdout
    _assert_same_final_state(straight, workdir)


def test_kill_and_resume_ends_bit_identical(toy_dir, tmp_path, straight):
    total = TOTAL
    killed = tmp_path / "killed"
    cmd = _tiny_flags(toy_dir, killed, validate=False)
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first = killed / "checkpoints" / "4"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps_before = sorted(int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit())
    assert steps_before and steps_before[-1] < total, "the run was not interrupted"

    resumed = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {killed / 'checkpoints'} at step" in resumed.stdout
    # WORKDIR/train.log holds both runs: appended on resume.
    log = (killed / "train.log").read_text()
    assert log.count("training TSN: 30 videos") == 2 and "resumed from" in log
    assert log.index("train step:3 ") < log.index("resumed from")

    variables, meta = checkpoint.load_weights(str(killed))  # no best/: its latest checkpoint
    assert meta["path"].endswith(os.path.join("checkpoints", str(total)))
    assert (meta["task"], meta["depth"], meta["num_classes"]) == ("plain", 18, 10)
    b = _final_state(killed, total)
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"],
                                  np.asarray(b["state"]["params"]["fc"]["kernel"]))
    _assert_same_final_state(straight, killed)


@pytest.mark.slow
def test_toy_run_learns_keeps_the_best_model_and_logs(full_toy_dir, tmp_path):
    workdir = tmp_path / "run"
    cmd = _tiny_flags(full_toy_dir, workdir, num_epochs=20, batch_size=32, valid_batch_size=40,
                      checkpoint_every_steps=1000, log_interval=10,
                      **{"data.short_size": 48, "data.target_size": 40})
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout
    assert (workdir / "train.log").read_text().splitlines() == log.splitlines()
    for field in ("loss:", "top1:", "top5:", "lr:", "batch_cost:", "reader_cost:", "ips:", "ETA:"):
        assert field in log
    assert "Already save the best model (top1 acc)" in log
    val_lines = [line for line in log.splitlines() if " val loss: " in line]
    best_mean_class = max(float(line.split("mean_class_top1: ")[1].split()[0])
                          for line in val_lines)
    assert 0.6 < best_mean_class <= 1.0, val_lines[-1]  # 8 val videos per class: ~Top-1
    variables, meta = checkpoint.load_variables(workdir / "best")
    # chance is 0.1; the full toy config (56 px, 30 epochs) 0.94; this 40 px run 0.775 at
    # best (AMD EPYC, AVX-512)
    assert meta["top1"] > 0.6, meta
    assert os.listdir(workdir / "tensorboard")
    losses = [float(line.split("loss: ")[1].split()[0]) for line in log.splitlines()
              if "train step:" in line]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_non_finite_loss_stops_loudly_without_overwriting_checkpoints(toy_dir, tmp_path):
    workdir = tmp_path / "nan"
    cmd = _tiny_flags(toy_dir, workdir, validate=False, **{"optim.base_lr": 1e30,
                                                           "optim.warmup_start_lr": 1e30})
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    # It names what is non-finite: the parameters after the first step, not the loss of that
    # step (computed before the update, still finite).
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: non-finite parameters (their norm) "), error
    assert "after step 1; the loss (" in error and "were finite" in error
    assert "stopped: NonFiniteLossError: non-finite parameters" in (workdir / "train.log").read_text()
    saved = [p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    for step in saved:  # whatever was saved holds finite parameters
        leaves = jax.tree.leaves(_final_state(workdir, int(step))["state"]["params"])
        assert all(np.isfinite(np.asarray(x)).all() for x in leaves)


def test_misspelled_override_is_refused(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ppsn.main", "--config=configs/pptsn_toy.py",
                           f"--workdir={tmp_path}", "--config.optim.base_lrr=0.1"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and done.stderr == ("error: --config override: 'base_lrr' Did "
                                                    "you mean \"base_lr\" instead of \"base_lrr\"?\n")


def _log_time(line):
    import datetime

    return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_validation_progress_and_the_meter_leaves_out_validation_and_checkpoints(toy_dir,
                                                                                  tmp_path):
    """Validation logs videos done / total; batch_cost and ips cover the steps only: with a
    checkpoint after every step and a validation every epoch, the step time the log lines
    report adds up to well under the wall time between them."""
    workdir = tmp_path / "run"
    cmd = _tiny_flags(toy_dir, workdir, num_epochs=3, checkpoint_every_steps=1, log_interval=1)
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert sum("validation: 8/20 videos" in line for line in lines) == 3
    assert sum("validation: 16/20 videos" in line for line in lines) == 3
    steps = [line for line in lines if "train step:" in line]
    assert len(steps) == 9
    step_time = sum(float(line.split("batch_cost: ")[1].split()[0]) for line in steps[1:])
    wall = _log_time(steps[-1]) - _log_time(steps[0])
    # 8 steps, 3 validations and 8 checkpoints between the first and the last line
    assert step_time < 0.6 * wall, (step_time, wall)


def test_init_from_a_checkpoint_with_another_head(tmp_path):
    source = TSN(depth=18, num_classes=400)
    variables = jax.tree.map(np.asarray, initialize.scratch_variables(source, seed=1))
    checkpoint.save_variables(tmp_path / "k400", variables, {"depth": 18, "num_classes": 400})
    target = TSN(depth=18, num_classes=10)
    fresh = initialize.scratch_variables(target, seed=2)
    loaded, _ = checkpoint.load_variables(tmp_path / "k400")
    merged = initialize.merge_loaded(fresh, loaded, "k400")
    np.testing.assert_array_equal(merged["params"]["backbone"]["conv1_1"]["conv"]["kernel"],
                                  variables["params"]["backbone"]["conv1_1"]["conv"]["kernel"])
    assert merged["params"]["fc"]["kernel"].shape == (512, 10)  # re-initialized head
    wrong = TSN(depth=34, num_classes=10)
    with pytest.raises(ValueError, match=r"^k400 holds a ResNet-18-vd; the model is a "
                                         r"ResNet-34-vd \(--config.model.depth=34\):\n"):
        initialize.merge_loaded(initialize.scratch_variables(wrong, 0), loaded, "k400")
    del loaded["params"]["backbone"]["conv1_1"]  # same depth, a part missing
    with pytest.raises(ValueError, match=r"^k400 does not fit the model's backbone \(3 "
                                         r"differences\):\n  missing params/backbone/conv1_1/bn/"):
        initialize.merge_loaded(fresh, loaded, "k400")


def test_missing_pretrained_path_is_an_error_not_random_weights(tmp_path):
    from ppsn.recipe import pptsn_config

    config = pptsn_config()
    config.model.depth, config.model.num_classes = 18, 10
    config.pretrained = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="python -m ppsn.convert.paddle"):
        initialize.initial_variables(config, initialize.build_model(config))
