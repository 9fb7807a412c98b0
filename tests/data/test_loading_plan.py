"""The loader plan: workers by need, capped by CPUs, read-ahead bounded in bytes."""

import json

from ppsn.benchmark.__main__ import main as benchmark_main
from ppsn.data import loading, loading_plan
from ppsn.recipe import pptsn_config


def _plan(capsys, *args):
    assert benchmark_main(["pipeline", "--plan", "--config", "configs/pptsn_k400_frames.py",
                           *args]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_the_k400_recipe_on_8_gpus_and_224_cpus_fits_48_workers_and_8_gib(capsys):
    plan = _plan(capsys, "--cpus", "224", "--local_devices", "8", "--host_memory_gb", "2048")
    # One part of the per-process batch per GPU (uint8): what a worker makes and holds.
    assert plan["parts"] == 8 and plan["batch_bytes"] == 32 * 3 * 224 * 224 * 3
    assert 1 <= plan["num_workers"] <= 48, plan
    assert plan["read_ahead_bytes"] <= 8 * 2**30, plan
    assert plan["read_ahead_bytes"] == plan["read_ahead_batches"] * plan["batch_bytes"]
    # ... and they feed the README's per-GPU target at a worker's slow rate (430 clips/s).
    assert plan["num_workers"] * 430 / 8 >= 1600 and plan["limited_by"] == "need", plan
    # A SLURM task of 12 CPUs per GPU: the workers one GPU needs, a small read-ahead.
    task = _plan(capsys, "--cpus", "12", "--local_devices", "1", "--processes", "8",
                 "--host_cpus", "224", "--host_memory_gb", "2048")
    assert task["num_workers"] == loading_plan.WORKERS_PER_DEVICE and task["limited_by"] == "need"
    assert task["read_ahead_bytes"] < 2**30


def test_workers_follow_need_cpus_and_the_byte_bound():
    data = pptsn_config().data
    clip = 3 * 224 * 224 * 3
    # CPU-only: all CPUs but one, as before.
    assert loading.loader_settings(data, 16).num_workers == 15
    gpu = dict(local_devices=2, accelerator=True, host_memory=64 * 2**30)
    assert loading.loader_settings(data, 64, **gpu, batch_bytes=8 * clip).num_workers == 10
    assert loading.loader_settings(data, 4, **gpu, batch_bytes=8 * clip).num_workers == 3
    data.read_ahead_mb = 100  # 4 batches of 14.5 MB per worker: 1 fits
    plan = loading.loading_plan(data, 64, **gpu, batch_bytes=32 * clip)
    assert (plan.num_workers, plan.limited_by) == (1, "read_ahead_mb")
    # The default bound: an eighth of this process's share of the host's memory, <= 8 GiB.
    assert loading_plan.default_read_ahead_mb(64 * 2**30, 8, 16) == 4096
    assert loading_plan.default_read_ahead_mb(2**41, 224, 224) == 8192
