"""Launchers: dry runs print the commands. local.sh really runs 2 processes on CPU in
tests/test_gcs.py (a bucket workdir) and tests/train/test_topology.py (a local one)."""

import os
import shlex
import signal
import subprocess
import tarfile
import time

from tests.conftest import REPO_ROOT


def _bash(*args, timeout=600, env=None):
    return subprocess.run(["bash", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_dry_runs_print_what_would_run():
    out = _bash("launch/local.sh", "--dry_run", "--processes", "2", "--devices_per_process", "2",
                "--", "--config=configs/pptsn_toy.py", "--workdir=w").stdout.splitlines()
    assert len(out) == 2
    assert "JAX_PROCESS_ID=0" in out[0] and "JAX_PROCESS_ID=1" in out[1]
    assert all("python -m ppsn.main --config=configs/pptsn_toy.py --workdir=w" in line for line in out)
    # Each local process gets its share of the CPUs for its data loader.
    cpus = max(1, len(os.sched_getaffinity(0)) // 2)
    assert all(f"PPSN_CPUS={cpus} " in line for line in out)
    tpu = _bash("launch/tpu_vm.sh", "--dry_run", "--tpu", "t", "--zone", "z", "--",
                "--config=configs/pptsn_k400_frames.py").stdout.splitlines()
    assert [shlex.split(line) for line in tpu] == [[
        "gcloud", "compute", "tpus", "tpu-vm", "ssh", "t", "--zone", "z", "--worker=all",
        "--command", "cd ppsn && PPSN_DISTRIBUTED=1 python -m ppsn.main "
                     "--config=configs/pptsn_k400_frames.py"]]
    slurm = _bash("launch/slurm_gpu.sbatch", "--dry_run", "--config=c").stdout
    assert "srun --kill-on-bad-exit=1 python -m ppsn.main --config=c" in slurm
    # One task per GPU gets its --cpus-per-task (SLURM_CPUS_PER_TASK) for its data loader.
    assert "PPSN_CPUS=12 srun" in slurm
    slurm = _bash("launch/slurm_gpu.sbatch", "--dry_run", "--config=c",
                  env={**os.environ, "SLURM_CPUS_PER_TASK": "7"}).stdout
    assert "PPSN_CPUS=7 srun" in slurm
    assert _bash("launch/tpu_vm.sh", "--tpu", "t").returncode == 2


TRICKY = "--config.data.train_list=/data/my lists/train's.list"  # a space and a quote


def _remote(line):
    """The argv of a printed gcloud line (pasted into bash) and of its --command (run by the
    workers' shell)."""
    argv = shlex.split(line)
    return argv, shlex.split(argv[argv.index("--command") + 1])


def test_tpu_setup_copies_the_checkout_and_every_line_pastes(tmp_path):
    out = _bash("launch/tpu_vm.sh", "--tpu", "t", "--zone", "z", "--project", "p", "--setup",
                "--dry_run", "--", "--config=configs/pptsn_k400_frames.py", TRICKY)
    assert out.returncode == 0, out.stderr
    tar, scp, install, start = out.stdout.splitlines()
    assert shlex.split(tar)[:2] == ["bash", "-c"] and shlex.split(tar)[-2:] == [
        str(REPO_ROOT), "/tmp/ppsn-src.tar.gz"]
    assert shlex.split(scp) == ["gcloud", "compute", "tpus", "tpu-vm", "scp",
                                "/tmp/ppsn-src.tar.gz", "t:/tmp/ppsn-src.tar.gz", "--zone", "z",
                                "--project", "p", "--worker=all"]
    argv, remote = _remote(install)
    assert argv[:11] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "t", "--zone", "z",
                         "--project", "p", "--worker=all"]
    assert remote == ["rm", "-rf", "ppsn", "&&", "mkdir", "-p", "ppsn", "&&", "tar", "-xzf",
                      "/tmp/ppsn-src.tar.gz", "-C", "ppsn", "&&", "python", "-m", "pip",
                      "install", "-e", "./ppsn[tpu]"]
    argv, remote = _remote(start)
    assert remote == ["cd", "ppsn", "&&", "PPSN_DISTRIBUTED=1", "python", "-m", "ppsn.main",
                      "--config=configs/pptsn_k400_frames.py", TRICKY]


def test_tpu_setup_installs_a_package_url_or_wheel(tmp_path):
    out = _bash("launch/tpu_vm.sh", "--tpu", "t", "--zone", "z", "--setup", "--package",
                "git+https://github.com/me/ppsn@v1", "--dry_run", "--", "--config=c")
    install, start = out.stdout.splitlines()
    assert _remote(install)[1] == ["python", "-m", "pip", "install",
                                   "ppsn[tpu] @ git+https://github.com/me/ppsn@v1"]
    assert _remote(start)[1] == ["PPSN_DISTRIBUTED=1", "python", "-m", "ppsn.main", "--config=c"]
    wheel = tmp_path / "ppsn-1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    out = _bash("launch/tpu_vm.sh", "--tpu", "t", "--zone", "z", "--setup", "--package",
                str(wheel), "--dry_run", "--", "--config=c")
    scp, install, _ = out.stdout.splitlines()
    assert shlex.split(scp)[5:7] == [str(wheel), f"t:/tmp/{wheel.name}"]
    assert _remote(install)[1] == ["python", "-m", "pip", "install",
                                   f"/tmp/{wheel.name}[tpu]"]
    for args, message in [((), "--tpu and --zone are required"),
                          (("--zone", "z", "--setup", "--package", str(tmp_path / "no.whl")),
                           "no such wheel file"),
                          (("--zone", "z", "--bogus"), "unknown option --bogus")]:
        done = _bash("launch/tpu_vm.sh", "--tpu", "t", *args)
        assert done.returncode == 2 and message in done.stderr and done.stdout == ""


def test_tpu_setup_for_real_makes_the_tarball_and_calls_gcloud(tmp_path):
    """Run (not a dry run) with a stand-in for the gcloud CLI (an external cloud tool) that
    records its arguments: the tarball holds the checkout's files, not .git or ignored ones."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    (bin_dir / "gcloud").write_text(f'#!/bin/sh\nprintf "%s|" "$@" >> {calls}\necho >> {calls}\n')
    (bin_dir / "gcloud").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    done = _bash("launch/tpu_vm.sh", "--tpu", "t", "--zone", "z", "--setup", "--", "--config=c",
                 env=env)
    assert done.returncode == 0, done.stderr
    lines = calls.read_text().splitlines()
    assert [line.split("|")[3] for line in lines] == ["scp", "ssh", "ssh"]
    assert lines[0].split("|")[4] == str(tmp_path / "ppsn-src.tar.gz")
    with tarfile.open(tmp_path / "ppsn-src.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"setup.cfg", "launch/tpu_vm.sh", "ppsn/paths.py", "tests/test_launch.py"} <= names
    assert not any(n.startswith((".git/", "data/", "output/")) or "__pycache__" in n
                   for n in names)


def test_slurm_passes_sigterm_to_ppsn_and_requeues_after_its_checkpoint(tmp_path):
    script = (REPO_ROOT / "launch" / "slurm_gpu.sbatch").read_text()
    assert "#SBATCH --requeue" in script and "#SBATCH --signal=B:TERM@120" in script
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    # Stand-ins: srun saves on SIGTERM and exits 143 as ppsn does; scontrol notes its call.
    (bin_dir / "srun").write_text(
        f'#!/usr/bin/env bash\necho "srun $*" >> {log}\n'
        f'trap \'echo "srun got TERM" >> {log}; exit 143\' TERM\n'
        'while true; do sleep 0.05; done\n')
    (bin_dir / "scontrol").write_text(f'#!/usr/bin/env bash\necho "scontrol $*" >> {log}\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "77"}
    proc = subprocess.Popen(["bash", "launch/slurm_gpu.sbatch", "--config=c", "--workdir=w"],
                            cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (log.exists() and "srun" in log.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # what SLURM sends the batch shell (B:) before the limit
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    calls = log.read_text().splitlines()
    assert calls == ["srun --kill-on-bad-exit=1 python -m ppsn.main --config=c --workdir=w",
                     "srun got TERM", "scontrol requeue 77"], calls
    assert "requeueing job 77" in err
