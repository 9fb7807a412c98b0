"""Pre-flight: what a run needs is checked before its first step, every problem in one error."""

import subprocess
import sys

import pytest

from ppsn import checkpoint, preflight
from ppsn.cli import ConfigError
from ppsn.recipe import toy_config
from tests.conftest import REPO_ROOT, zero_variables


def _config(toy_dir, **overrides):
    config = toy_config()
    config.data.data_prefix = str(toy_dir)
    for split in ("train", "val", "test"):
        config.data[f"{split}_list"] = f"{toy_dir}/{split}_frames.list"
    config.data.label_list = f"{toy_dir}/label_list.txt"
    config.data.generate_toy = False
    config.batch_size, config.valid_batch_size = 8, 8
    for key, value in overrides.items():
        node = config
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return config


def test_a_good_config_passes_and_its_inputs_are_returned(toy_dir):
    inputs = preflight.check(_config(toy_dir), "train", 8)
    assert len(inputs.train) == 30 and len(inputs.valid) == 20 and inputs.test is None
    assert inputs.label_names is None  # the label list names classes in test reports only
    assert inputs.skipped_lines() == {}


def test_every_problem_is_reported_at_once(toy_dir, tmp_path):
    config = _config(toy_dir, **{
        "valid_batch_size": 12, "optim.base_lr": float("nan"), "loss.label_smoothing": 1.5,
        "data.val_list": str(tmp_path / "missing.list"), "init_from": str(tmp_path / "nope")})
    with pytest.raises(ConfigError) as err:
        preflight.check(config, "train", 8)
    message = str(err.value)
    assert message.startswith("5 problems: (1) ") and "\n" not in message
    assert "--config.valid_batch_size=12 does not divide over the 8 devices" in message
    assert "--config.optim.base_lr=nan: the learning rate must be finite and > 0" in message
    assert "--config.loss.label_smoothing=1.5" in message
    assert "valid data: list file not found: " + str(tmp_path / "missing.list") in message
    assert f"--config.init_from={tmp_path / 'nope'} does not exist" in message


def test_skipped_lines_past_the_limit_refuse_the_run(toy_dir, tmp_path):
    lines = (toy_dir / "train_frames.list").read_text().splitlines()
    (tmp_path / "train.list").write_text("\n".join(lines + ["frames/x 12 99"]) + "\n")
    config = _config(toy_dir, **{"data.train_list": str(tmp_path / "train.list")})
    with pytest.raises(ConfigError, match=r"train data: 1 of 31 lines of \S+train.list cannot be "
                                          r"used \(3.2%, above --config.data.max_skipped_lines=0.01\)"
                                          r", e.g. line 31: label 99 out of range"):
        preflight.check(config, "train", 1)
    config.data.max_skipped_lines = 0.05
    skipped = preflight.check(config, "train", 1).skipped_lines()
    assert [s.line_number for s in skipped[str(tmp_path / "train.list")]] == [31]


def _save(path, depth, classes):
    variables = zero_variables(depth, classes)  # shapes are what the checks read
    checkpoint.save_variables(path, variables, {"depth": depth, "num_classes": classes})
    return str(path)


def test_checkpoints_are_checked_against_the_model(toy_dir, tmp_path):
    r34 = _save(tmp_path / "r34", 34, 10)
    config = _config(toy_dir, init_from=r34)
    with pytest.raises(ConfigError, match=r"init_from=\S+r34 holds a ResNet-34-vd; the run needs "
                                          "a ResNet-18-vd"):
        preflight.check(config, "train", 1)
    # A run that resumes does not read init_from again.
    workdir = tmp_path / "run"
    (workdir / "checkpoints" / "7").mkdir(parents=True)
    preflight.check(config, "train", 1, workdir=str(workdir))

    five = _save(tmp_path / "five", 18, 5)
    config = _config(toy_dir, **{"distill.mode": "kd", "distill.teacher_depth": 18,
                                 "distill.teacher_checkpoint": five})
    with pytest.raises(ConfigError, match="teacher_checkpoint=\\S+five has 5 classes; the model "
                                          "has 10"):
        preflight.check(config, "train", 1)

    # Test mode and export: the weights' depth and classes against the config.
    with pytest.raises(ConfigError, match=r"holds a ResNet-34-vd; the config asks for "
                                          r"ResNet-18-vd \(--config.model.depth=34"):
        preflight.check(_config(toy_dir), "test", 1, weights=r34)
    with pytest.raises(ConfigError, match=r"has 5 classes; the config has 10"):
        preflight.check(_config(toy_dir), "export", 1, weights=five)
    variables, meta = preflight.check(_config(toy_dir), "export", 1,
                                      weights=_save(tmp_path / "r18", 18, 10)).weights
    assert meta["depth"] == 18 and variables["params"]["fc"]["kernel"].shape == (512, 10)


def test_a_batch_size_that_does_not_divide_stops_the_run_before_the_first_step(toy_dir,
                                                                                tmp_path):
    """Found at start-up (one line, exit 2), not at the first validation after an epoch."""
    from tests.train.test_loop import _tiny_flags

    workdir = tmp_path / "run"
    cmd = _tiny_flags(toy_dir, workdir, batch_size=8, valid_batch_size=12)
    env = {**__import__("os").environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last == ("error: --config.valid_batch_size=12 does not divide over the 8 devices: "
                    "use a multiple of 8"), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "train step" not in done.stdout
    assert not (workdir / "checkpoints").exists()


@pytest.mark.parametrize("field,value,message", [
    ("optim.base_lr", float("inf"), "--config.optim.base_lr=inf: the learning rate must be "
                                    "finite and > 0"),
    ("num_epochs", 0, "--config.num_epochs=0: must be an integer >= 1"),
])
def test_impossible_values_are_refused_up_front(toy_dir, field, value, message):
    """In process: how a ConfigError ends ``ppsn.main`` (exit 2, this one line) is the batch
    size test's, above."""
    with pytest.raises(ConfigError) as err:
        preflight.check(_config(toy_dir, **{field: value}), "train", 1)
    assert str(err.value) == message


@pytest.mark.parametrize("field, value, message", [
    ("max_steps", 0, "--config.max_steps=0: must be an integer >= 1 (-1: the whole schedule)"),
    ("max_steps", -5, "--config.max_steps=-5: must be an integer >= 1"),
    ("model.conv_impl", "winograd", "--config.model.conv_impl='winograd': one of 'auto'"),
    ("data.handoff", "pipe", "--config.data.handoff='pipe': one of 'ring', 'grain'"),
    ("data.test_sampling", "random", "--config.data.test_sampling='random': one of '', "),
    ("data.test_canvas", 0, "--config.data.test_canvas=0: must be an integer >= 1"),
    ("data.retain_freed_mb", -2, "--config.data.retain_freed_mb=-2: must be an integer >= 0"),
])
def test_every_config_value_is_checked_at_start_up(toy_dir, field, value, message):
    with pytest.raises(ConfigError) as err:
        preflight.check(_config(toy_dir, **{field: value}), "train", 1)
    assert str(err.value).startswith(message), str(err.value)


def test_config_file_errors_are_one_line_naming_the_file_and_line(tmp_path):
    """A config file is user code: what goes wrong in it (or what it returns) is one line
    and exit 2, never a traceback nor a "--config override" blamed."""
    cases = {"syntax.py": ("def get_config(:\n", "line 1: SyntaxError: "),
             "raises.py": ("from ppsn.recipe import toy_config\n\ndef get_config():\n"
                           "    c = toy_config()\n    c.model.depth = depht\n    return c\n",
                           "line 5: NameError: name 'depht' is not defined"),
             "none.py": ("def get_config():\n    c = 1\n",
                         "get_config() returned None (no return statement?)")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        done = subprocess.run([sys.executable, "-m", "ppsn.main", f"--config={tmp_path / name}",
                               "--config.amp=True", f"--workdir={tmp_path / 'w'}"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(f"error: --config={tmp_path / name}: {message}"), \
            done.stderr
    assert not (tmp_path / "w").exists()


def test_a_workdir_that_is_a_file_or_under_one_is_one_line_naming_it(tmp_path):
    (tmp_path / "file").write_text("x")
    for workdir, where in ((tmp_path / "file", "is a file"),
                           (tmp_path / "file" / "run", f"is under {tmp_path / 'file'}, a file")):
        for mode in ("--mode=train", "--mode=test"):
            done = subprocess.run([sys.executable, "-m", "ppsn.main", mode, "--weights=w",
                                   "--config=configs/pptsn_toy.py", f"--workdir={workdir}"],
                                  cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
            assert done.returncode == 2 and done.stderr == (
                f"error: --workdir={workdir}: {where}, not a folder\n"), done.stderr


def test_the_cli_usage_errors_are_one_line(tmp_path):
    for args in (["--config=configs/pptsn_toy.py"],  # training without --workdir
                 ["--config=configs/nope.py", f"--workdir={tmp_path}"],
                 ["--config=configs/pptsn_toy.py", "--mode=test"]):
        done = subprocess.run([sys.executable, "-m", "ppsn.main", *args], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    done = subprocess.run([sys.executable, "-m", "ppsn.main", "--config=configs/pptsn_toy.py",
                           "--config.amp=maybe", f"--workdir={tmp_path}"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1] == "error: --config.amp='maybe': 'auto', True or False"
