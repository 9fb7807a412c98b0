"""Workdirs, data, checkpoints, reports and exports in a bucket (``gs://``), against a real
GCS-compatible server on 127.0.0.1 (``tests.gcs_server``): the same commands as on a local
disk, and the same results."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ppsn import checkpoint, paths
from tests.conftest import REPO_ROOT, require_module


def _run(*args, timeout=600, **kwargs):
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def _upload(local, url):
    """A local folder copied into the bucket."""
    assert paths.upload_tree(local, url) > 0
    return url


def test_paths_are_one_type_for_local_files_and_bucket_objects(gcs_dir, tmp_path):
    assert paths.join(gcs_dir, "a", "b.txt") == f"{gcs_dir}/a/b.txt"
    assert paths.join(str(tmp_path), "a") == os.path.join(str(tmp_path), "a")
    assert paths.join("/data/x", "/abs/y") == "/abs/y"
    assert paths.join("prefix", "gs://other/v.mp4") == "gs://other/v.mp4"
    assert paths.absolute("rel/dir") == paths.path(os.path.join(os.getcwd(), "rel/dir"))
    assert os.fspath(paths.absolute(gcs_dir)) == gcs_dir
    for base in (str(tmp_path / "local"), gcs_dir):
        paths.makedirs(paths.join(base, "d"))
        paths.path(paths.join(base, "d", "f.txt")).write_text("x")
        assert paths.listdir(base) == ["d"] and paths.listdir(paths.join(base, "d")) == ["f.txt"]
        assert paths.listdir(paths.join(base, "missing")) == []
        paths.move_tree(paths.join(base, "d"), paths.join(base, "e"), last="f.txt")
        assert paths.listdir(base) == ["e"]
        paths.remove_tree(paths.join(base, "e"))
        assert not paths.exists(paths.join(base, "e"))


def test_a_mirrored_file_appends_across_runs_in_a_bucket(gcs_dir):
    """No appends in a bucket: the file is written locally and pushed; a resumed run's copy
    starts from what the bucket holds."""
    target = paths.join(gcs_dir, "train.log")
    first = paths.Mirror(target, interval=3600)
    with open(first.local, "a") as f:
        f.write("run 1\n")
    first.push()  # the first push is sent at once
    assert paths.path(target).read_text() == "run 1\n"
    with open(first.local, "a") as f:
        f.write("more\n")
    first.push()  # within the interval: not sent
    assert paths.path(target).read_text() == "run 1\n"
    first.push(now=True)
    assert paths.path(target).read_text() == "run 1\nmore\n"
    first.close()
    assert not os.path.exists(first.local)
    second = paths.Mirror(target)
    with open(second.local, "a") as f:
        f.write("run 2\n")
    second.close()
    assert paths.path(target).read_text() == "run 1\nmore\nrun 2\n"
    board = paths.Mirror(paths.join(gcs_dir, "tensorboard"), directory=True)
    with open(os.path.join(board.local, "events.1"), "wb") as f:
        f.write(b"\0" * 10)
    board.close()
    assert paths.listdir(paths.join(gcs_dir, "tensorboard")) == ["events.1"]


def test_the_first_push_is_sent_on_a_machine_booted_a_moment_ago(gcs_dir, monkeypatch):
    """time.monotonic() counts from boot: 5 s after it, a mirror with a 30 s interval still
    sends its first push at once (a freshly started VM's train.log reaches the bucket)."""
    monkeypatch.setattr(time, "monotonic", lambda: 5.0)
    target = paths.join(gcs_dir, "train.log")
    mirror = paths.Mirror(target, interval=30)
    with open(mirror.local, "a") as f:
        f.write("step 1\n")
    mirror.push()
    assert paths.path(target).read_text() == "step 1\n"
    mirror.close()


def test_a_gs_path_without_the_gcs_extra_is_a_one_line_error(tmp_path):
    """gcsfs made unimportable: the run stops at once, naming the extra to install."""
    code = ("import runpy, sys; sys.modules['gcsfs'] = None; sys.argv = ['ppsn.main', "
            "'--config=configs/pptsn_toy.py', '--workdir=gs://ppsn-test/run']; "
            "runpy.run_module('ppsn.main', run_name='__main__')")
    done = _run("-c", code, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "error: gs://ppsn-test/run: gs:// paths need the 'gcs' extra: pip install 'ppsn[gcs]' "
        "(gcsfs)")


def test_a_bucket_workdir_without_a_server_or_credentials_fails_at_once(tmp_path):
    """One line naming what is missing, before any retries (which took ~50 s)."""
    import importlib.util
    import socket

    if importlib.util.find_spec("gcsfs") is None:  # found, not imported: gcsfs reads the
        require_module("gcsfs")  # test server's settings on import (conftest's gcs_server)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if "STORAGE" not in k and "GOOGLE" not in k}
    cases = [({"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"},
              f"cannot reach the storage server http://127.0.0.1:{port} (STORAGE_EMULATOR_HOST): "
              "Connection refused"),
             ({"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json")},
              f"no Google Cloud credentials (File {tmp_path / 'missing.json'} was not found.)")]
    for extra, message in cases:
        done = _run("-m", "ppsn.main", "--config=configs/pptsn_toy.py",
                    "--workdir=gs://ppsn-test/run", env={**env, **extra}, timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert done.stderr.strip().splitlines()[-1].startswith(
            f"error: --workdir=gs://ppsn-test/run: {message}"), done.stderr[-2000:]


def test_variables_checkpoints_in_a_bucket(gcs_dir):
    variables = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
                 "batch_stats": {"m": np.ones(3, np.float32)}}
    target = paths.join(gcs_dir, "ckpt")
    assert checkpoint.save_variables(target, variables, {"depth": 18}) == target
    loaded, meta = checkpoint.load_weights(target)
    np.testing.assert_array_equal(loaded["params"]["w"], variables["params"]["w"])
    assert meta == {"depth": 18, "path": target}
    with pytest.raises(FileExistsError, match="already exists"):
        checkpoint.save_variables(target, variables, {"depth": 18})
    variables["params"]["w"] += 1
    checkpoint.save_variables(target, variables, {"depth": 18}, force=True)
    np.testing.assert_array_equal(checkpoint.load_variables(target)[0]["params"]["w"],
                                  variables["params"]["w"])
    assert paths.listdir(gcs_dir) == ["ckpt"]  # no .ppsn-tmp / .ppsn-old left
    paths.path(paths.join(gcs_dir, "notes", "a.txt")).write_text("mine")
    with pytest.raises(FileExistsError, match="is not a ppsn checkpoint"):
        checkpoint.save_variables(paths.join(gcs_dir, "notes"), variables, {}, force=True)
    assert paths.listdir(paths.join(gcs_dir, "notes")) == ["a.txt"]


def _toy_flags(data, workdir, **overrides):
    flags = {"data.data_prefix": data, "data.train_list": f"{data}/train_frames.list",
             "data.val_list": f"{data}/val_frames.list", "data.test_list": f"{data}/val_frames.list",
             "data.label_list": f"{data}/label_list.txt", "data.generate_toy": False,
             "data.short_size": 40, "data.target_size": 32, "data.test_num_seg": 2,
             "data.num_workers": 0, "batch_size": 8, "valid_batch_size": 8, "num_epochs": 4,
             "checkpoint_every_steps": 2, "keep_checkpoints": 20, "log_interval": 3}
    flags.update(overrides)
    return (["-m", "ppsn.main", "--config=configs/pptsn_toy.py", f"--workdir={workdir}"]
            + [f"--config.{k}={v}" for k, v in flags.items()])


def _state(step_dir):
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(paths.path(paths.join(step_dir, "state")))


@pytest.mark.slow
def test_a_run_in_a_bucket_killed_and_resumed_matches_a_local_run(toy_dir, gcs_dir, tmp_path):
    """Data (a list-file dataset whose data_prefix is a bucket) and workdir in the bucket: killed
    after its first checkpoints and started again, the run resumes from the bucket and ends
    bit-identical to an uninterrupted local run on local data; then test mode writes its
    reports and export its artifact to the bucket, and predict serves that artifact."""
    total = 4 * (30 // 8)
    local = tmp_path / "local"
    done = _run(*_toy_flags(toy_dir, local))
    assert done.returncode == 0, done.stderr[-3000:]

    data = _upload(toy_dir, paths.join(gcs_dir, "toy"))
    workdir = paths.join(gcs_dir, "run")
    cmd = [sys.executable, *_toy_flags(data, workdir)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    while not checkpoint.saved_steps(workdir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = checkpoint.saved_steps(workdir)
    assert before and before[-1] < total, f"the run was not interrupted ({before})"

    resumed = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {workdir}/checkpoints at step {before[-1]}" in resumed.stdout
    assert checkpoint.saved_steps(workdir)[-1] == total
    a = _state(os.path.join(local, "checkpoints", str(total)))
    b = _state(paths.join(workdir, "checkpoints", str(total)))
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 100
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # The run's files are in the bucket: the resumed run appended to train.log.
    names = paths.listdir(workdir)
    for name in ("best", "checkpoints", "config.json", "tensorboard", "train.log"):
        assert name in names, names
    assert paths.path(paths.join(workdir, "train.log")).read_text().count(
        "training TSN: 30 videos") == 2
    assert json.loads(paths.path(paths.join(workdir, "best", "ppsn.json")).read_text())["top1"] >= 0
    assert paths.listdir(paths.join(workdir, "tensorboard"))

    reports = paths.join(gcs_dir, "test")
    tested = _run(*_toy_flags(data, workdir), "--mode=test", f"--weights={workdir}",
                  f"--workdir={reports}")
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert paths.listdir(reports) == ["confusion_matrix.png", "ledger.csv", "per_class.csv",
                                      "scores.npz", "summary.json"]  # no bad sample: no bad_samples.jsonl
    summary = json.loads(paths.path(paths.join(reports, "summary.json")).read_text())
    assert summary["count"] == 20 and summary["checkpoint"].startswith(workdir)
    assert paths.path(paths.join(reports, "confusion_matrix.png")).read_bytes()[:4] == b"\x89PNG"

    model = paths.join(gcs_dir, "inference")
    exported = _run("-m", "ppsn.export", "--config=configs/pptsn_toy.py", f"--weights={workdir}",
                    f"--output={model}", "--platforms=cpu", "--config.data.test_num_seg=2",
                    "--config.data.short_size=40", "--config.data.target_size=32")
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert paths.listdir(model) == ["inference.json", "model.jax", "weights.npz"]
    video = paths.join(data, "videos", paths.listdir(paths.join(data, "videos"))[0])
    predicted = _run("-m", "ppsn.predict", f"--model_dir={model}", f"--input_file={video}")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert f"Current video file: {video}" in predicted.stdout and "top-1 class:" in predicted.stdout


def test_tfds_data_prepared_into_a_bucket_trains_from_it(toy_dir, gcs_dir, tmp_path):
    """data.prepare --data_dir gs://...: written locally, uploaded with its marker last; a run
    reads the ArrayRecord files from the bucket."""
    data_dir = paths.join(gcs_dir, "tfds")
    done = _run("-m", "ppsn.data.prepare", "--dataset", "toy", "--manual_dir", toy_dir,
                "--data_dir", data_dir, "--local_dir", tmp_path / "staging", "--num_workers", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"written to {data_dir}/toy/frames/2.0.0" in done.stdout
    again = _run("-m", "ppsn.data.prepare", "--dataset", "toy", "--manual_dir", toy_dir,
                 "--data_dir", data_dir, "--local_dir", tmp_path / "staging")
    assert again.returncode == 0 and "already prepared" in again.stdout
    run = _run(*_toy_flags(toy_dir, tmp_path / "run", **{
        "data.source": "tfds", "data.tfds_data_dir": data_dir, "num_epochs": 1,
        "validate": False}))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "training TSN: 30 videos" in run.stdout
    assert checkpoint.saved_steps(tmp_path / "run") == [2, 3]


@pytest.mark.slow
def test_two_processes_share_one_bucket_workdir(toy_dir, gcs_dir):
    """launch/local.sh runs 2 processes x 2 devices that train, validate and checkpoint in one
    bucket workdir: both resolve the same checkpoints; process 0 alone prints the step lines
    and writes the shared files."""
    workdir = paths.join(gcs_dir, "run")
    flags = _toy_flags(toy_dir, workdir, num_epochs=2)[3:]
    done = subprocess.run(["bash", "launch/local.sh", "--processes", "2",
                           "--devices_per_process", "2", "--", "--config=configs/pptsn_toy.py",
                           f"--workdir={workdir}", *flags],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert checkpoint.saved_steps(workdir) == [2, 4, 6]
    assert paths.exists(paths.join(workdir, "best", "ppsn.json"))
    assert done.stdout.count("global batch 8 on 4 devices (2 processes)") == 1
    assert done.stdout.count("train step:") == 2 and "Already save the best model" in done.stdout
    log = paths.path(paths.join(workdir, "train.log")).read_text()
    assert log.count("global batch 8 on 4 devices (2 processes)") == 1
    assert log.count("train step:") == 2
    data = paths.listdir(paths.join(workdir, "checkpoints", "6", "data"))
    assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(data), data
