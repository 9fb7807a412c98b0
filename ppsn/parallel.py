"""Device mesh, shardings, multi-host start-up, and host batches -> global arrays.

Data parallel over all devices of all processes: one mesh axis ``data``. The train state is
replicated; batches are sharded along their leading axis. With ``jax.jit`` and these
shardings XLA computes BatchNorm statistics, losses and metrics over the **global** batch, so
results do not depend on how many devices share it.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)

DATA_AXIS = "data"


def initialize_distributed() -> None:
    """``jax.distributed.initialize()`` when launched as several processes.

    Recognized: an explicit coordinator (``JAX_COORDINATOR_ADDRESS`` + ``JAX_NUM_PROCESSES`` +
    ``JAX_PROCESS_ID``), and the cluster environments JAX detects itself (SLURM with several
    tasks, Open MPI, Cloud TPU; ``PPSN_DISTRIBUTED=1`` forces the auto-detecting call, as
    ``launch/tpu_vm.sh`` does). A single plain process does nothing."""
    if jax.distributed.is_initialized():
        return
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address:
        kwargs = dict(coordinator_address=address,
                      num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                      process_id=int(os.environ["JAX_PROCESS_ID"]))
    elif os.environ.get("PPSN_DISTRIBUTED") == "1" or int(os.environ.get("SLURM_NTASKS", "1")) > 1 or any(
            v in os.environ for v in ("OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                                      "MEGASCALE_COORDINATOR_ADDRESS")):
        kwargs = {}  # JAX reads the cluster's environment
    else:
        return
    # CPU processes need a collectives implementation (harmless for GPU/TPU backends).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    log.info("jax.distributed: process %d of %d, %d local / %d global devices",
             jax.process_index(), jax.process_count(), jax.local_device_count(),
             jax.device_count())


def make_mesh(devices=None) -> Mesh:
    devices = np.asarray(devices if devices is not None else jax.devices())
    return Mesh(devices.reshape(-1), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh) -> int:
    """The per-process batch for a global batch; it must split evenly over devices."""
    n = mesh.devices.size
    if global_batch % n:
        raise ValueError(f"batch size {global_batch} is not divisible by the {n} devices")
    return global_batch // jax.process_count()


def to_global(local_batch, mesh: Mesh):
    """This process's part of a batch (numpy tree) -> globally sharded ``jax.Array`` tree."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x),
                        local_batch)


def to_host(tree):
    """Fetch a replicated (or fully addressable) tree to numpy.

    A replicated array is read from this process's own copy, without any collective, so one
    process alone may call it (e.g. process 0 saving the best model)."""

    def fetch(x):
        if isinstance(x, jax.Array) and x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(fetch, tree)
