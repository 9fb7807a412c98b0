"""Test mode: every video scored exactly once whatever the devices/processes, and the reports."""

import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import portpicker
import pytest

from ppsn import checkpoint
from ppsn.models import TSN
from ppsn.train import initialize
from tests.conftest import REPO_ROOT, zero_variables


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "r18"
    variables = jax.tree.map(np.asarray, initialize.scratch_variables(TSN(18, 10), seed=3))
    checkpoint.save_variables(path, variables, {"depth": 18, "num_classes": 10})
    return path


def _cmd(toy_dir, weights, out, batch):
    flags = {"data.data_prefix": toy_dir, "data.test_list": f"{toy_dir}/val_frames.list",
             "data.label_list": f"{toy_dir}/label_list.txt", "data.test_num_seg": 2,
             "data.short_size": 40, "data.target_size": 32, "test_batch_per_device": batch}
    return ([sys.executable, "-m", "ppsn.main", "--config=configs/pptsn_toy.py", "--mode=test",
             f"--weights={weights}", f"--workdir={out}"]
            + [f"--config.{k}={v}" for k, v in flags.items()])


def _env(devices, **extra):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _ledger(out):
    with open(out / "ledger.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("devices,batch", [(1, 3), (3, 2), (8, 4)])
def test_every_video_is_scored_once_on_any_device_count(toy_dir, weights, tmp_path, devices, batch):
    out = tmp_path / "test"
    done = subprocess.run(_cmd(toy_dir, weights, out, batch), cwd=REPO_ROOT, env=_env(devices),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Top-1:" in done.stdout and "Top-5:" in done.stdout
    rows = _ledger(out)
    listed = (toy_dir / "val_frames.list").read_text().splitlines()
    assert len(rows) == len(listed) == 20
    assert sorted(r["video_id"] for r in rows) == sorted(l.split()[0] for l in listed)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["count"] == 20 and summary["devices"] == devices
    # 20 videos on 8 devices: 3 per device hold them in one step (not 4: 12 padding videos)
    assert summary["batch_per_device"] == min(batch, -(-20 // devices))
    assert summary["top1"] == pytest.approx(np.mean([r["label"] == r["prediction"] for r in rows]))
    per_class = list(csv.DictReader(open(out / "per_class.csv")))
    assert sum(int(c["count"]) for c in per_class) == 20
    assert sum(int(c["correct"]) for c in per_class) == round(summary["top1"] * 20)
    assert per_class[0]["name"] == "warm_circle"
    assert (out / "confusion_matrix.png").stat().st_size > 1000


def test_two_processes_score_each_video_once(toy_dir, weights, tmp_path):
    port = portpicker.pick_unused_port()
    out = tmp_path / "test"
    procs = [subprocess.Popen(
        _cmd(toy_dir, weights, out, 3), cwd=REPO_ROOT,
        env=_env(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=2,
                 JAX_PROCESS_ID=i),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-3000:]
    rows = _ledger(out)
    assert len(rows) == 20 and len({r["video_id"] for r in rows}) == 20
    assert json.loads((out / "summary.json").read_text())["processes"] == 2


def test_device_crops_score_exactly_like_host_crops(toy_dir, weights):
    from ppsn import parallel
    from ppsn.data import datasets
    from ppsn.data.clips import ClipSpec
    from ppsn.data.lists import ListFileSource
    from ppsn.checkpoint import load_weights
    from ppsn.test_mode import score_fn

    source = ListFileSource(str(toy_dir / "test_videos.list"), "videos", str(toy_dir))
    variables, _ = load_weights(str(weights))
    mesh = parallel.make_mesh()
    results = []
    for device_crops in (False, True):
        spec = ClipSpec("test", 2, 40, 32, device_crops=device_crops, canvas=64)
        batch = datasets.eval_dataset(source, spec, 4, process_index=0, process_count=1)[0]
        if device_crops:
            assert batch["frames"].shape == (4, 2, 64, 64, 3) and batch["hw"].shape == (4, 2)
        inputs = {k: batch[k] for k in ("frames", "hw") if k in batch}
        results.append(np.asarray(score_fn(TSN(18, 10), mesh, spec)(
            variables, parallel.to_global(inputs, mesh))["scores"]))
    np.testing.assert_array_equal(results[0], results[1])


def test_a_smaller_batch_scores_a_video_as_a_full_one(toy_dir, weights):
    """Why a short list may run smaller batches: a video's scores do not depend on the batch
    it is in, up to float summation order (as between device counts)."""
    from ppsn import backend, parallel
    from ppsn.checkpoint import load_weights
    from ppsn.data import datasets
    from ppsn.data.clips import ClipSpec
    from ppsn.data.lists import ListFileSource
    from ppsn.test_mode import score_fn

    source = ListFileSource(str(toy_dir / "test_frames.list"), "frames", str(toy_dir))
    variables, _ = load_weights(str(weights))
    mesh = parallel.make_mesh()
    spec = ClipSpec("test", 2, 40, 32, device_crops=True, canvas=64)
    score = score_fn(TSN(18, 10), mesh, spec, backend.views_per_call())
    results = []
    for size in (4, 1):
        batch = datasets.eval_dataset(source, spec, size, process_index=0, process_count=1)[0]
        inputs = {k: batch[k] for k in ("frames", "hw")}
        results.append(np.asarray(score(variables, parallel.to_global(inputs, mesh))["scores"]))
    np.testing.assert_allclose(results[0][:1], results[1], rtol=1e-5, atol=1e-6)
    assert results[0][0].argmax() == results[1][0].argmax()


def _repeated_list(toy_dir, out, n):
    """A frames list of ``n`` entries cycling over the toy training videos."""
    lines = (toy_dir / "train_frames.list").read_text().splitlines()
    out.write_text("\n".join(lines[i % len(lines)] for i in range(n)) + "\n")
    return out


def test_compilations_do_not_grow_with_the_number_of_videos(toy_dir, weights, tmp_path):
    """Every jitted function compiles once per run: 30 and 60 videos (8 and 15 batches of 4)
    compile the same number of programs."""
    counts = {}
    for n in (30, 60):
        out = tmp_path / f"test{n}"
        cmd = _cmd(toy_dir, weights, out, 4) + [
            f"--config.data.test_list={_repeated_list(toy_dir, tmp_path / f'{n}.list', n)}",
            "--config.compilation_cache_dir=none"]
        done = subprocess.run(cmd, cwd=REPO_ROOT, env=_env(1), capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["count"] == n and len(_ledger(out)) == n
        assert summary["batch_per_device"] == 4 and summary["views_per_call"] == 10
        counts[n] = summary["compilations"]
        assert summary["compiled"] == summary["compilations"]  # the cache is off
    assert counts[30] == counts[60] > 0, counts


def test_labels_and_ids_come_from_the_batches_not_a_second_pass(toy_dir, weights, tmp_path,
                                                                 monkeypatch):
    """Each record of the source is read once, by the pipeline (TFDS records carry the frames:
    a second pass to collect labels would read the whole dataset again)."""
    from ppsn import test_mode
    from ppsn.data import datasets
    from ppsn.recipe import toy_config

    reads = []

    class CountingSource(datasets.ListFileSource):
        def __getitem__(self, index):
            reads.append(index)
            return super().__getitem__(index)

    def make_source(data_cfg, mode, num_classes):
        return CountingSource(data_cfg.test_list, data_cfg.format, data_cfg.data_prefix,
                              num_classes)

    monkeypatch.setattr(datasets, "make_source", make_source)
    config = toy_config()
    config.data.data_prefix = str(toy_dir)
    config.data.test_list = str(toy_dir / "val_frames.list")
    config.data.label_list = str(toy_dir / "label_list.txt")
    config.data.test_num_seg, config.data.short_size, config.data.target_size = 2, 40, 32
    config.test_batch_per_device = 3
    config.compilation_cache_dir = "none"
    summary = test_mode.run_test(config, str(weights), str(tmp_path / "out"))
    assert summary["count"] == 20
    assert sorted(reads) == list(range(20))  # each record read exactly once
    rows = _ledger(tmp_path / "out")
    listed = [line.split() for line in (toy_dir / "val_frames.list").read_text().splitlines()]
    assert [(r["video_id"], int(r["label"])) for r in rows] == [(p, int(y)) for p, _, y in listed]


def test_a_bad_label_list_or_wrong_weights_stop_before_the_first_video(toy_dir, weights,
                                                                        tmp_path):
    """Found at start-up with one line and exit 2, not after the whole list (reports lost) or
    as a shape error inside jit."""
    (tmp_path / "labels.txt").write_text("0 warm_circle\n1 warm_square\n")
    cmd = _cmd(toy_dir, weights, tmp_path / "out", 4) + [
        f"--config.data.label_list={tmp_path / 'labels.txt'}"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: --config.data.label_list={tmp_path / 'labels.txt'} has no name for 8 of the 10 "
        "classes (e.g. id 2): it names 2 classes, the model has 10 (--config.model.num_classes)")
    assert "test:" not in done.stderr and not (tmp_path / "out").exists()  # no video scored

    r34 = tmp_path / "r34"
    checkpoint.save_variables(r34, zero_variables(34, 10), {"depth": 34, "num_classes": 10})
    done = subprocess.run(_cmd(toy_dir, r34, tmp_path / "out", 4), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"error: --weights={r34}: {r34} holds a ResNet-34-vd; the config asks for ResNet-18-vd")


def test_skipped_list_lines_are_counted_in_the_top1_line_and_the_summary(toy_dir, weights,
                                                                         tmp_path):
    lines = (toy_dir / "test_frames.list").read_text().splitlines()
    (tmp_path / "test.list").write_text("\n".join(lines[:4] + ["frames/x 12 eleven"]) + "\n")
    cmd = _cmd(toy_dir, weights, tmp_path / "out", 4) + [
        f"--config.data.test_list={tmp_path / 'test.list'}"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "max_skipped_lines" in done.stderr  # 1 of 5: above 1%
    done = subprocess.run(cmd + ["--config.data.max_skipped_lines=0.25"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]  # done, but an input was bad
    assert "(4 videos, 0 failed to decode, 1 list lines skipped (not scored);" in done.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["count"], summary["skipped_lines"], summary["listed"]) == (4, 1, 5)
    assert summary["skipped"][0]["line_number"] == 5
    assert "label is not an integer" in summary["skipped"][0]["reason"]


def test_reports_replace_only_earlier_reports(toy_dir, weights, tmp_path):
    """A second test into the same directory needs --force and replaces only a test report."""
    out = tmp_path / "out"
    cmd = _cmd(toy_dir, weights, out, 4)
    first = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    (out / "stale.txt").write_text("from an earlier run")
    again = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1] == (
        f"error: {out}: already exists (pass force=True / --force to replace it)")
    forced = subprocess.run(cmd + ["--force"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=600)
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert not (out / "stale.txt").exists() and (out / "summary.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no sibling left
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    refused = subprocess.run(_cmd(toy_dir, weights, mine, 4) + ["--force"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "is not a ppsn test report (no summary.json)" in \
        refused.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
