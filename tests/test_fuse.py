"""Test mode's scores.npz and mean class Top-1, and ppsn.fuse over real test runs."""

import csv
import json

import jax
import numpy as np
import pytest

from ppsn import checkpoint, cli, fuse, test_mode
from ppsn.evaluation import scores as score_files
from ppsn.models import TSN
from ppsn.recipe import toy_config
from ppsn.train import initialize


def _test_run(toy_dir, weights, out, list_name):
    config = toy_config()
    config.data.data_prefix = str(toy_dir)
    config.data.test_list = str(toy_dir / list_name)
    config.data.label_list = str(toy_dir / "label_list.txt")
    config.data.test_num_seg, config.data.short_size, config.data.target_size = 1, 40, 32
    config.test_batch_per_device = 4
    return test_mode.run_test(config, str(weights), str(out))


@pytest.fixture(scope="module")
def runs(toy_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuse")
    weights = tmp / "r18"
    variables = jax.tree.map(np.asarray, initialize.scratch_variables(TSN(18, 10), seed=5))
    checkpoint.save_variables(weights, variables, {"depth": 18, "num_classes": 10})
    return {name: (tmp / name, _test_run(toy_dir, weights, tmp / name, f"{name}_frames.list"))
            for name in ("val", "test")}


def test_test_mode_writes_scores_and_mean_class_top1(runs, toy_dir):
    out, summary = runs["val"]
    saved = score_files.read(str(out))
    rows = list(csv.DictReader(open(out / "ledger.csv")))
    assert saved.video_id.tolist() == [r["video_id"] for r in rows]
    assert saved.label.tolist() == [int(r["label"]) for r in rows]
    assert saved.scores.shape == (20, 10) and saved.scores.dtype == np.float32
    np.testing.assert_allclose(saved.scores.sum(1), 1.0, rtol=1e-5)
    assert saved.list == str(toy_dir / "val_frames.list") and saved.list_sha256
    assert saved.scores.argmax(1).tolist() == [int(r["prediction"]) for r in rows]
    per_class = [float(c["accuracy"]) for c in csv.DictReader(open(out / "per_class.csv"))
                 if int(c["count"])]
    assert summary["mean_class_top1"] == pytest.approx(np.mean(per_class), abs=1e-4)
    assert json.loads((out / "summary.json").read_text())["mean_class_top1"] == \
        summary["mean_class_top1"]


def test_fusing_a_run_with_itself_gives_its_numbers(runs, tmp_path, capsys):
    out, summary = runs["val"]
    assert fuse.main(["--runs", str(out), str(out), "--weights", "1,3",
                      "--output_dir", str(tmp_path / "fused")]) == cli.OK
    printed = capsys.readouterr().out
    assert (f"Top-1: {summary['top1']:.4f}  Top-5: {summary['top5']:.4f}  "
            f"mean class Top-1: {summary['mean_class_top1']:.4f}") in printed
    fused = json.loads((tmp_path / "fused" / "summary.json").read_text())
    for key in ("top1", "top5", "mean_class_top1", "count"):
        assert fused[key] == summary[key], key
    assert (tmp_path / "fused" / "ledger.csv").read_text() == (out / "ledger.csv").read_text()
    np.testing.assert_array_equal(score_files.read(str(tmp_path / "fused")).scores,
                                  score_files.read(str(out)).scores)


def test_fuse_refuses_runs_that_cannot_be_fused(runs, tmp_path, capsys):
    val, test = str(runs["val"][0]), str(runs["test"][0])

    def error(*argv):
        code = fuse.main([*argv, "--output_dir", str(tmp_path / "fused")])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == cli.USAGE and len(lines) == 1, lines
        return lines[0]

    assert error("--runs", val, test).startswith(f"error: --runs {test}: scored ")
    assert "fuse runs over the same list" in error("--runs", val, test)
    other = score_files.read(val)
    five = tmp_path / "five"
    five.mkdir()
    score_files.write(str(five), score_files.RunScores(
        other.video_id, other.label % 5, other.scores[:, :5], other.failed, "m", other.list,
        other.list_sha256))
    assert error("--runs", val, str(five)) == (
        f"error: --runs {five}: 5 classes, {val} has 10: fuse runs of the same classes")
    assert error("--runs", val, str(tmp_path)) == (
        f"error: --runs {tmp_path}: no scores.npz (not a test mode output directory)")
    assert error("--runs", val, val, "--weights", "1") == "error: --weights=1: 1 weights for 2 runs"
    assert not (tmp_path / "fused").exists()
    assert fuse.main(["--runs", val, "--output_dir", val]) == cli.USAGE
    assert "already exists" in capsys.readouterr().err
