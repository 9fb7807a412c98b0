"""Launchers: dry runs print the commands; local.sh really runs 2 processes on CPU."""

import os
import subprocess

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
                "--config=configs/pptsn_k400_frames.py").stdout
    assert "gcloud compute tpus tpu-vm ssh t --zone z --worker=all" in tpu
    assert "PPSN_DISTRIBUTED=1 python -m ppsn.main --config=configs/pptsn_k400_frames.py" in tpu
    slurm = _bash("launch/slurm_gpu.sbatch", "--dry_run", "--config=c").stdout
    assert "srun --kill-on-bad-exit=1 python -m ppsn.main --config=c" in slurm
    # One task per GPU gets its --cpus-per-task (SLURM_CPUS_PER_TASK) for its data loader.
    assert "PPSN_CPUS=12 srun" in slurm
    slurm = _bash("launch/slurm_gpu.sbatch", "--dry_run", "--config=c",
                  env={**os.environ, "SLURM_CPUS_PER_TASK": "7"}).stdout
    assert "PPSN_CPUS=7 srun" in slurm
    assert _bash("launch/tpu_vm.sh", "--tpu", "t").returncode == 2


def test_two_local_processes_train_validate_and_checkpoint(toy_dir, tmp_path):
    t = toy_dir
    flags = [f"--config.data.data_prefix={t}", f"--config.data.train_list={t}/train_frames.list",
             f"--config.data.val_list={t}/val_frames.list", "--config.data.generate_toy=False",
             "--config.data.short_size=40", "--config.data.target_size=32",
             "--config.batch_size=8", "--config.valid_batch_size=8", "--config.num_epochs=2",
             "--config.checkpoint_every_steps=2", "--config.log_interval=3"]
    done = _bash("launch/local.sh", "--processes", "2", "--devices_per_process", "2", "--",
                 "--config=configs/pptsn_toy.py", f"--workdir={tmp_path / 'run'}", *flags)
    assert done.returncode == 0, done.stderr[-3000:]
    # Only process 0 prints the per-step lines (the others: warnings and errors), and it
    # writes WORKDIR/train.log.
    assert done.stdout.count("global batch 8 on 4 devices (2 processes)") == 1
    assert done.stdout.count("train step:") == 2 and "Already save the best model" in done.stdout
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("train step:") == 2 and log.count("global batch 8 on 4 devices") == 1
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()
                  if p.name.isdigit()) == ["2", "4", "6"]
    assert (tmp_path / "run" / "best" / "ppsn.json").exists()
