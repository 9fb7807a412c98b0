"""Every command in the README's ``bash`` blocks and tables is exercised.

Each command must match one rule of ``RULES``; a command no rule covers fails the test, so the
README cannot gain an unchecked command. Per rule:

* ``run``: run here as written (in a scratch directory that links ``configs/`` and ``launch/``),
  when it is cheap: the toy data generator, the launchers' ``--dry_run``;
* ``ci``: the test command itself, which must be what ``.ci/run`` runs;
* ``test``: the named test runs this command (the same CLI and flags, small data); the test
  must exist. Besides, every ``--config`` command is parsed for real (the config file loads and
  every ``--config.FIELD=VALUE`` override applies) and every other ``--flag`` must be one the CLI
  defines.
"""

import ast
import os
import re
import shlex
import subprocess

import pytest

from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()

T = "tests/"
RULES = [
    (r"pip install -e \"\.\[test\]\"", "ci", None),
    (r"python -m pytest -q -n 2 -m (\"not slow\"|slow)", "ci", None),
    (r"pip install -e (\.|\"\.\[serve\]\")", "test", T + "test_readme.py::test_extras_exist"),
    (r"python -m ppsn\.main --config=configs/pptsn_toy\.py --workdir=\S+", "test",
     T + "train/test_loop.py::test_toy_run_learns_keeps_the_best_model_and_logs"),
    (r"XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m ppsn\.main .*", "test",
     T + "train/test_parallel.py::test_one_device_and_eight_devices_give_the_same_loss"),
    (r"python -m ppsn\.main --config=configs/pptsn_(k400|ucf101)_frames\.py --workdir=\S+( --config\.amp=(True|False))?",
     "test", T + "train/test_loop.py::test_toy_run_learns_keeps_the_best_model_and_logs"),
    (r"python -m ppsn\.main --config=configs/pptsn_k400_frames\.py --workdir=gs://\S+ .*", "test",
     T + "test_gcs.py::test_a_run_in_a_bucket_killed_and_resumed_matches_a_local_run"),
    (r"python -m ppsn\.main --config=configs/pptsn_toy_distill\.py .*", "test",
     T + "train/test_distill.py::test_toy_kd_run_logs_both_losses_and_leaves_the_teacher_untouched"),
    (r"python -m ppsn\.main --config=configs/pptsn_k400_frames_distill_r101\.py .*", "test",
     T + "train/test_distill.py::test_kd_step_keeps_the_teacher_frozen_and_out_of_the_optimizer"),
    (r"python -m ppsn\.main --config=configs/pptsn_toy\.py --workdir=\S+ --config\.data\.generate_toy=False .*",
     "test", T + "data/test_make_lists.py::test_three_commands_from_a_folder_of_videos_to_a_trained_model"),
    (r"python -m ppsn\.data\.make_lists .*", "test",
     T + "data/test_make_lists.py::test_three_commands_from_a_folder_of_videos_to_a_trained_model"),
    (r"python -m ppsn\.fuse .*", "test", T + "test_fuse.py::test_fusing_a_run_with_itself_gives_its_numbers"),
    (r"python -m ppsn\.predict .*--timeline=\S+.*", "test", T + "serve/test_timeline.py::"
     "test_windows_are_streamed_and_scored_as_clips_of_the_decoded_video"),
    (r"python -m ppsn\.benchmark predict .*--baseline unfolded", "test", T + "test_benchmark.py::"
     "test_predict_benchmark_times_batchnorm_folding_against_the_unfolded_export"),
    (r"python -m ppsn\.benchmark complexity .*", "test",
     T + "models/test_complexity.py::test_complexity_command_prints_one_json_line"),
    (r"python -m ppsn\.main .* --mode=test .*", "test",
     T + "test_test_mode.py::test_every_video_is_scored_once_on_any_device_count"),
    (r"python -m ppsn\.data\.toy --output data/toy", "run", None),
    (r"python -m ppsn\.data\.prepare .*--window .*", "test",
     T + "data/test_tfds.py::test_prepare_resumes_after_a_kill_without_redoing_finished_shards"),
    (r"python -m ppsn\.data\.prepare .*", "test",
     T + "data/test_tfds.py::test_prepare_cli_toy_frames_and_read_back"),
    (r"python -m ppsn\.data\.check .*", "test",
     T + "data/test_check.py::test_check_cli_finds_every_kind_of_bad_entry"),
    (r"launch/local\.sh --processes 2 .*", "test",
     T + "test_gcs.py::test_two_processes_share_one_bucket_workdir"),
    (r"launch/tpu_vm\.sh .*--setup --dry_run .*", "test",
     T + "test_launch.py::test_tpu_setup_copies_the_checkout_and_every_line_pastes"),
    (r"(launch/tpu_vm\.sh|bash launch/slurm_gpu\.sbatch) .*--dry_run .*", "run", None),
    (r"launch/tpu_vm\.sh .*", "test", T + "test_launch.py::test_dry_runs_print_what_would_run"),
    (r"sbatch launch/slurm_gpu\.sbatch .*", "test",
     T + "test_launch.py::test_dry_runs_print_what_would_run"),
    (r"python -m ppsn\.convert\.paddle .*", "test",
     T + "convert/test_paddle.py::test_cli_writes_a_loadable_orbax_checkpoint"),
    (r"python -m ppsn\.export .*--int8.*", "test",
     T + "serve/test_int8.py::test_export_cli_refuses_a_short_calibration_list_in_one_line"),
    (r"python -m ppsn\.predict .*--test_list=.*", "test",
     T + "serve/test_int8.py::test_predict_int8_agrees_with_fp32_on_toy_clips"),
    (r"python -m ppsn\.export .*--onnx", "test",
     T + "test_export_predict.py::test_exported_scores_equal_the_in_process_model"),
    (r"python -m ppsn\.export .*--platforms=\S+", "test",
     T + "test_export_predict.py::test_export_cli_platforms_flag"),
    (r"python -m ppsn\.predict .*--backend=\S+.*", "test",
     T + "test_export_predict.py::test_predict_backends_match_xla_on_a_real_video"),
    (r"python -m ppsn\.predict .*", "test",
     T + "test_export_predict.py::test_predict_cli_on_files_and_directories_with_bad_files"),
    (r"python -m ppsn\.benchmark pipeline --plan .*", "test", T + "data/test_loading_plan.py::"
     "test_the_k400_recipe_on_8_gpus_and_224_cpus_fits_48_workers_and_8_gib"),
    (r"python -m ppsn\.benchmark pipeline .*(--source tfds|--compare).*", "test",
     T + "test_benchmark.py::test_pipeline_benchmark_tfds_source_reads_only_the_sampled_frames"
         "_and_compares_settings"),
    (r"python -m ppsn\.benchmark pipeline .*--data_format videos.*", "test",
     T + "test_benchmark.py::test_pipeline_benchmark_test_mode_on_long_and_short_gop_videos_with_a_worker"),
    (r"python -m ppsn\.benchmark pipeline .*", "test",
     T + "test_benchmark.py::test_pipeline_benchmark_prints_a_json_line"),
    (r"python -m ppsn\.benchmark train_step .*", "test", T + "test_benchmark.py::"
     "test_train_step_benchmark_reports_throughput_the_naive_baseline_and_the_kd_overhead"),
    (r"python -m ppsn\.benchmark loop( .*)?", "test",
     T + "test_benchmark.py::test_loop_benchmark_times_the_real_loop"),
    (r"python -m ppsn\.benchmark eval .*", "test",
     T + "test_benchmark.py::test_eval_benchmark_reports_seconds_per_video"),
    (r"python -m ppsn\.benchmark predict .*", "test",
     T + "test_benchmark.py::test_predict_benchmark_reports_seconds_per_video"),
    (r"python -m ppsn\.benchmark aot .*--topology \d*x?\d+xh100.*", "test",
     T + "test_aot.py::test_toy_train_step_compiles_for_8_h100_in_bf16"),
    (r"python -m ppsn\.benchmark aot .*", "test",
     T + "test_aot.py::test_toy_train_step_compiles_for_v5e_2x2"),
    (r"python -m ppsn\.benchmark distill( .*)?", "test", T + "test_benchmark.py::"
     "test_distill_benchmark_trains_a_teacher_and_pairs_the_students_of_each_seed"),
]

# Where each CLI defines its flags (argparse or absl), for the flag-name check.
CLI_SOURCES = {
    "ppsn.main": ["ppsn/main.py"], "ppsn.export": ["ppsn/export.py"],
    "ppsn.predict": ["ppsn/predict.py"], "ppsn.benchmark": ["ppsn/benchmark/pipeline.py", "ppsn/benchmark/plan.py", "ppsn/benchmark/train_step.py", "ppsn/benchmark/loop.py", "ppsn/benchmark/eval.py", "ppsn/benchmark/predict.py",
                       "ppsn/benchmark/distill.py", "ppsn/benchmark/complexity.py", "ppsn/benchmark/aot.py"],
    "ppsn.fuse": ["ppsn/fuse.py"], "ppsn.data.make_lists": ["ppsn/data/make_lists.py"],
    "ppsn.convert.paddle": ["ppsn/convert/paddle.py"], "ppsn.data.prepare": ["ppsn/data/prepare.py"],
    "ppsn.data.check": ["ppsn/data/check.py"], "ppsn.data.toy": ["ppsn/data/toy.py"],
}


def readme_commands():
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands += [c.strip() for c in line.split(" && ")]
    for row in re.findall(r"^\|.*$", README, re.M):  # tables give commands too (Benchmarks)
        commands += re.findall(r"`((?:[A-Z_]+=\S+ )*python -m ppsn[^`]*)`", row)
    return commands


def rule_for(command):
    for pattern, kind, target in RULES:
        if re.fullmatch(pattern, command):
            return kind, target
    return None


COMMANDS = readme_commands()


def test_the_readme_has_commands_and_every_one_is_covered():
    assert len(COMMANDS) > 30
    uncovered = [c for c in COMMANDS if rule_for(c) is None]
    assert not uncovered, "README commands no rule covers:\n" + "\n".join(uncovered)


def _test_exists(target):
    path, name = target.split("::")
    tree = ast.parse((REPO_ROOT / path).read_text())
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body)


def test_every_mapped_test_exists():
    missing = sorted({t for c in COMMANDS if (r := rule_for(c)) and r[0] == "test"
                      for t in [r[1]] if not _test_exists(t)})
    assert not missing, missing


def test_ci_runs_the_readme_test_command():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    for command in COMMANDS:
        if rule_for(command) and rule_for(command)[0] == "ci":
            assert command.replace('"', "") in ci.replace('"', ""), command


def test_extras_exist():
    setup = (REPO_ROOT / "setup.cfg").read_text()
    for extra in ("serve", "gcs", "test", "cuda", "tpu"):
        assert re.search(rf"^{extra} =$", setup, re.M), extra
    for extra in ("gcs", "test", "tpu"):  # gs:// paths, their tests, TPU VMs
        assert "gcsfs" in setup.split(f"\n{extra} =")[1].split("\n\n")[0].split("\n# ")[0], extra
    serve = setup.split("serve =")[1].split("\n\n")[0].split("\n#")[0]
    assert all(p in serve for p in ("onnx", "onnxruntime", "openvino"))


def _module_and_args(command):
    words = shlex.split(command)
    while words and "=" in words[0] and not words[0].startswith("-"):
        words = words[1:]  # VAR=value prefixes
    if words[:2] != ["python", "-m"]:
        return None, []
    return words[2], words[3:]


@pytest.mark.parametrize("command", [c for c in COMMANDS
                                     if (_module_and_args(c)[0] or "").startswith("ppsn")])
def test_flags_are_ones_the_cli_defines(command):
    module, args = _module_and_args(command)
    sources = "".join((REPO_ROOT / p).read_text() for p in CLI_SOURCES[module])
    for arg in args:
        if not arg.startswith("--") or arg.startswith("--config"):
            continue
        name = arg[2:].split("=")[0]
        defined = (f'"--{name}"' in sources  # argparse
                   or re.search(rf'DEFINE_\w+\(\s*"{name}"', sources))  # absl
        assert defined, f"{command}: {module} has no flag --{name}"


@pytest.mark.parametrize("command", sorted({c for c in COMMANDS if "--config=configs/" in c}))
def test_config_commands_parse(command, monkeypatch):
    """The config file loads and the overrides apply (locked configs refuse unknown fields), as
    absl parses ``--config`` for ``ppsn.main`` (in process, on a flag set of its own)."""
    from absl import flags
    from ml_collections import config_flags

    monkeypatch.chdir(REPO_ROOT)
    argv = ["prog"] + [a for a in shlex.split(command) if a.startswith("--config")]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                    sys_argv=argv)  # the overrides it defines: from argv
    values(argv)
    config = values.config
    assert config.model.depth > 0 and config.distill.mode in ("", "kd", "dml"), command


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A working directory where README commands can run without touching the checkout."""
    root = tmp_path_factory.mktemp("readme")
    for name in ("configs", "launch"):
        (root / name).symlink_to(REPO_ROOT / name)
    return root


@pytest.mark.parametrize("command", [c for c in COMMANDS if rule_for(c)[0] == "run"])
def test_cheap_commands_run_as_written(command, scratch):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p))
    done = subprocess.run(command, shell=True, cwd=scratch, capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, f"{command}\n{done.stdout[-1000:]}\n{done.stderr[-2000:]}"
    if "ppsn.data.toy" in command:
        assert (scratch / "data" / "toy" / "train_frames.list").exists()
    else:
        # what the launcher would run (lines quoted for pasting: parsed as bash would)
        assert "python -m ppsn.main" in " ".join(
            " ".join(shlex.split(line)) for line in done.stdout.splitlines())
