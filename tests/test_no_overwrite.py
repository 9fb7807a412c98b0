"""Nothing overwritten, nothing silently reinterpreted: the toy generator only fills its own
folders, a refused run writes nothing into its workdir, a resume may change only what is safe,
a config file's fields are the recipe's, data.check never reports over an input."""

import os
import subprocess
import sys

import pytest

from ppsn import cli, preflight, resume_compat, train_mode
from ppsn.cli import ConfigError, UserError
from ppsn.data import check, toy
from tests.conftest import REPO_ROOT
from tests.test_preflight import _config


def _digest(root):
    return {os.path.relpath(os.path.join(d, n), root): open(os.path.join(d, n), "rb").read()
            for d, _, names in os.walk(root) for n in names}


def test_the_toy_generator_never_fills_a_folder_it_did_not_make(tmp_path):
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "train_videos.list").write_text("videos/a.mp4 0\n")
    (mine / "label_list.txt").write_text("0 mine\n")
    before = _digest(mine)
    config = _config(mine)
    config.data.generate_toy = True
    with pytest.raises(UserError, match=rf"^--config.data.data_prefix={mine} holds files the toy "
                                        "generator did not write \\(no toy.json\\): refusing .*"
                                        "set --config.data.generate_toy=False"):
        train_mode.train_and_evaluate(config, str(tmp_path / "run"))
    assert _digest(mine) == before and not (tmp_path / "run").exists()
    with pytest.raises(UserError, match=rf"^--output={mine} holds files"):
        toy.generate(str(mine), num_frames=2, videos_per_class={"train": 1, "val": 0, "test": 0})
    assert toy.main(["--output", str(mine / "label_list.txt")]) == cli.USAGE  # a file: refused
    assert _digest(mine) == before

    # A new or empty folder is filled; one the generator began (its marker first) is finished.
    small = {"train": 1, "val": 0, "test": 0}
    (tmp_path / "empty").mkdir()
    toy.generate(str(tmp_path / "empty"), num_frames=2, videos_per_class=small)
    begun = tmp_path / "begun"
    begun.mkdir()
    (begun / toy.MARKER).write_text('{"complete": false}')
    (begun / "train_frames.list").write_text("half written\n")
    toy.generate(str(begun), num_frames=2, videos_per_class=small)
    assert (begun / "train_frames.list").read_text().count("\n") == 10


def test_a_refused_run_leaves_the_workdir_byte_identical(toy_dir, tmp_path):
    workdir = tmp_path / "run"
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "config.json").write_text(_config(toy_dir).to_json_best_effort(indent=2))
    (workdir / "train.log").write_text("an earlier run's log\n")
    before = _digest(workdir)
    with pytest.raises(ConfigError, match=r"--config.optim.base_lr=nan"):
        train_mode.train_and_evaluate(_config(toy_dir, **{"optim.base_lr": float("nan")}), str(workdir))
    assert _digest(workdir) == before
    new = tmp_path / "new"
    with pytest.raises(ConfigError):
        train_mode.train_and_evaluate(_config(toy_dir, **{"optim.base_lr": float("nan")}), str(new))
    assert not new.exists()


def test_resuming_refuses_what_changes_shapes_or_the_schedule(toy_dir, tmp_path):
    workdir = tmp_path / "run"
    (workdir / "checkpoints" / "4").mkdir(parents=True)  # a saved step: the run would resume
    (workdir / "config.json").write_text(_config(toy_dir).to_json_best_effort(indent=2))
    before = _digest(workdir)
    changed = _config(toy_dir, **{"model.depth": 34, "batch_size": 16, "optim.base_lr": 0.5})
    with pytest.raises(ConfigError) as err:
        train_mode.train_and_evaluate(changed, str(workdir))
    assert str(err.value) == (
        f"--workdir={workdir} holds checkpoints trained with another config: resuming would "
        "change batch_size 8 -> 16, model.depth 18 -> 34, optim.base_lr 0.02 -> 0.5 (the model's "
        f"shapes or the training schedule); keep the values of {workdir}/config.json or use "
        "another --workdir")
    assert _digest(workdir) == before
    # Where the data is, how it is loaded, the log / checkpoint cadence: safe.
    safe = _config(toy_dir, **{"log_interval": 7, "checkpoint_every_steps": 9, "max_steps": 3,
                               "data.num_workers": 1, "data.data_prefix": str(toy_dir) + "/",
                               "valid_batch_size": 4})
    preflight.check(safe, "train", 1, workdir=str(workdir))
    for field in ("model.num_classes", "num_epochs", "data.num_seg", "optim.warmup_epochs",
                  "seed", "loss.mixup_alpha", "distill.mode"):
        assert field not in resume_compat.SAFE


def test_a_misspelled_field_in_a_config_file_is_refused(tmp_path):
    config_file = tmp_path / "mine.py"
    config_file.write_text("from ppsn.recipe import toy_config\n\n\ndef get_config():\n"
                           "    c = toy_config()\n    c.model.depht = 50\n    c.lock()\n"
                           "    return c\n")
    done = subprocess.run([sys.executable, "-m", "ppsn.main", f"--config={config_file}",
                           f"--workdir={tmp_path / 'run'}"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 2 and done.stderr == (
        f"error: --config={config_file}: model.depht is not a field of the recipe "
        "(ppsn/recipe.py); did you mean model.depth?\n")
    assert not (tmp_path / "run").exists()


def test_data_check_never_writes_its_report_over_an_input(toy_dir, tmp_path, capsys):
    listed = tmp_path / "val.list"
    listed.write_text((toy_dir / "val_frames.list").read_text())
    other = tmp_path / "notes.tsv"
    other.write_text("mine\n")
    before = _digest(tmp_path)
    args = ["--list", str(listed), "--format", "frames", "--data_prefix", str(toy_dir),
            "--num_classes", "10", "--num_workers", "1"]
    for report, what in ((listed, "is the --list this check reads"),
                         (tmp_path / "." / "val.list", "is the --list this check reads"),
                         (other, "exists and is not an earlier data.check report")):
        assert check.main(args + ["--report", str(report)]) == cli.USAGE
        err = capsys.readouterr().err
        assert err.startswith(f"error: --report {report}: {what}") and err.count("\n") == 1
    assert _digest(tmp_path) == before
    # An earlier report (its header line) is replaced.
    report = tmp_path / "r.tsv"
    assert check.main(args + ["--report", str(report)]) == cli.OK
    first = report.read_text()
    assert first.splitlines()[:2] == [check.REPORT_HEADER, "entry\treason"]
    assert check.main(args + ["--report", str(report)]) == cli.OK
    assert report.read_text() == first
