"""How many loader workers a process needs and how much it may read ahead: sized by need,
bounded in bytes (pure arithmetic; :func:`ppsn.data.loading.loader_settings` applies it).

Workers come from what the devices consume: ``WORKERS_PER_DEVICE`` per accelerator (one worker
makes 430-600 recipe train clips/s, 1.6-2.3 ms CPU per clip measured by ``python -m
ppsn.benchmark pipeline``; the README's per-GPU target is 1,000-1,600 clips/s, so 4 workers at
the slow rate, 5 with a margin), all CPUs but one on a CPU-only run, and never more than the
CPUs the process may use minus one (the main process feeds the devices).

The train batch is made in parts, one per local device (:func:`batch_parts`): a worker builds
one device's rows (32 recipe clips on 8 GPUs), not a whole per-process batch, and Grain keeps
``Loader.read_ahead / num_workers`` parts per worker (4 with the derived settings), so
read-ahead grows with the workers by the bytes of a part: it is bounded in bytes by
``data.read_ahead_mb`` (``-1``: an eighth of this process's share of the
host's memory, at most ``MAX_DEFAULT_READ_AHEAD_MB``), and the derived worker count is lowered
until the read-ahead fits. An explicit ``data.num_workers`` is kept (with a warning when it does
not fit).
"""

from __future__ import annotations

import dataclasses
import os

WORKERS_PER_DEVICE = 5
MAX_DEFAULT_READ_AHEAD_MB = 8192
MEMORY_FRACTION = 8  # the default read-ahead: 1/8 of the process's share of host memory


def host_memory_bytes() -> int:
    """This host's memory: ``MemTotal`` of ``/proc/meminfo``, or the cgroup's limit if lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit) as f:
                value = f.read().strip()
        except OSError:
            continue
        if value.isdigit():
            total = min(total, int(value))
    return total


def default_read_ahead_mb(host_memory: int, cpus: int, host_cpus: int) -> int:
    """An eighth of the process's share of the host's memory (its CPUs' share: a SLURM task
    of 12 of 224 CPUs gets 12/224 of it), at most ``MAX_DEFAULT_READ_AHEAD_MB``."""
    share = host_memory * min(1.0, cpus / max(1, host_cpus))
    return max(1, min(MAX_DEFAULT_READ_AHEAD_MB, int(share / MEMORY_FRACTION / 2**20)))


def batch_parts(local_batch: int, local_devices: int) -> int:
    """Parts of a per-process train batch: one per local device (each put straight on its
    device), or 1 where the batch does not split evenly. The same on every backend: a CPU-only
    process has one device, hence one part."""
    return local_devices if local_devices > 0 and local_batch % local_devices == 0 else 1


def workers_by_need(cpus: int, local_devices: int, accelerator: bool) -> int:
    """Workers the devices need, capped by the CPUs (one left to the main process)."""
    most = max(0, cpus - 1)
    if not accelerator:
        return most
    return min(most, WORKERS_PER_DEVICE * max(1, local_devices))


@dataclasses.dataclass(frozen=True)
class Plan:
    num_workers: int
    workers_by_need: int
    batches_per_worker: int  # Grain's buffers per worker (``Loader.read_ahead / num_workers``)
    read_ahead_batches: int  # elements: parts of batches
    batch_bytes: int  # one element a worker makes: a part of a per-process batch (uint8 frames)
    read_ahead_bytes: int
    read_ahead_budget_bytes: int
    limited_by: str  # 'need', 'cpus', 'read_ahead_mb' or 'config' (data.num_workers given)
    parts: int = 1  # parts of a per-process batch

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["read_ahead_gib"] = round(self.read_ahead_bytes / 2**30, 2)
        return out


def plan(*, cpus: int, local_devices: int, accelerator: bool, batch_bytes: int,
         budget_mb: int, batches_per_worker: int, num_workers: int = -1,
         main_batches: int = 2, parts: int = 1) -> Plan:
    """Workers and read-ahead for a process (``num_workers=-1``: derived). ``batch_bytes``: one
    element a worker makes (one of a batch's ``parts``). ``main_batches``: the read-ahead
    without workers (the main process's prefetch)."""
    need = workers_by_need(cpus, local_devices, accelerator)
    budget = budget_mb * 2**20
    if num_workers >= 0:
        workers, limited = num_workers, "config"
    else:
        workers = need
        limited = "cpus" if need < WORKERS_PER_DEVICE * max(1, local_devices) else "need"
        fit = budget // max(1, batches_per_worker * batch_bytes)
        if accelerator is False:
            limited = "cpus"
        if workers > fit:
            workers, limited = max(1, int(fit)), "read_ahead_mb"
    batches = workers * batches_per_worker if workers else main_batches
    return Plan(num_workers=workers, workers_by_need=need, batches_per_worker=batches_per_worker,
                read_ahead_batches=batches, batch_bytes=batch_bytes,
                read_ahead_bytes=batches * batch_bytes, read_ahead_budget_bytes=budget,
                limited_by=limited, parts=parts)
