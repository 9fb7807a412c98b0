"""Device mesh, shardings, multi-host start-up, and host batches -> global arrays.

Data parallel over all devices of all processes. The mesh has two axes, ``slice`` (TPU slices,
joined by the slow data-center network) and ``data`` (the devices of one slice, or of one
GPU host, or all CPU devices): ``[num_slices, devices per slice]``. On a multi-slice TPU the
devices are laid out by ``mesh_utils.create_hybrid_device_mesh``, each slice contiguous and in
its torus order, so that a reduction runs over the fast in-slice network first and crosses
slices once; elsewhere by ``mesh_utils.create_device_mesh`` (one slice). Batches are sharded
along their leading axis over both axes (``BATCH_AXES``); the train state is replicated. With
``jax.jit`` and these shardings XLA computes BatchNorm statistics, losses and metrics over the
**global** batch. Mixup is the one thing each device does alone: it mixes its own shard
(:func:`ppsn.train.steps.mixup_per_shard`).

A process's batch may come in parts (one per local device, :mod:`ppsn.data.loading`):
:func:`parts_to_global` puts each device's rows on it from the part that holds them, without
joining the parts on the host first.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)

SLICE_AXIS, DATA_AXIS = "slice", "data"
BATCH_AXES = (SLICE_AXIS, DATA_AXIS)  # the batch is split over every device


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


def device_grid(devices) -> np.ndarray:
    """``devices`` as a ``[num_slices, devices per slice]`` array, slices in ``slice_index``
    order, each in the order ``mesh_utils`` gives its interconnect (see the module doc)."""
    from jax.experimental import mesh_utils

    devices = list(devices)
    num_slices = len({getattr(d, "slice_index", 0) for d in devices})
    if num_slices > 1:
        if len(devices) % num_slices:
            raise ValueError(f"{len(devices)} devices do not split evenly over {num_slices} slices")
        return mesh_utils.create_hybrid_device_mesh([1, len(devices) // num_slices],
                                                    [num_slices, 1], devices)
    try:
        return mesh_utils.create_device_mesh([1, len(devices)], devices)
    except (AssertionError, NotImplementedError, ValueError) as e:
        # e.g. a subset of a TPU slice that is not a cuboid: keep the given order.
        log.warning("device mesh in the given order (mesh_utils: %s)", e)
        return np.asarray(devices, dtype=object).reshape(1, -1)


def make_mesh(devices=None) -> Mesh:
    """The ``(slice, data)`` mesh over ``devices`` (default: every device of every process)."""
    return Mesh(device_grid(devices if devices is not None else jax.devices()), BATCH_AXES)


def describe(mesh: Mesh) -> str:
    """``mesh slice=1 x data=8: 8 x NVIDIA H100 80GB HBM3 (gpu), 1 process`` for the log."""
    kinds = sorted({f"{d.device_kind} ({d.platform})" for d in mesh.devices.flat})
    shape = " x ".join(f"{name}={size}" for name, size in mesh.shape.items())
    return (f"mesh {shape}: {mesh.devices.size} x {', '.join(kinds)}, "
            f"{jax.process_count()} process{'es' if jax.process_count() > 1 else ''}")


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def check_batch_size(global_batch: int, mesh: Mesh) -> int:
    """The per-process batch for a global batch; it must split evenly over devices."""
    n = mesh.devices.size
    if global_batch % n:
        raise ValueError(f"batch size {global_batch} is not divisible by the {n} devices")
    return global_batch // jax.process_count()


def smallest_filling_batch(items: int, per_device: int, devices: int) -> int:
    """Per-device batch for ``items`` to score in batches of ``per_device`` per device: as
    given, or fewer when fewer items than one global batch are there (the fewest per device
    that hold them all in one step; padding rows cost as much as real ones)."""
    return max(1, min(per_device, -(-items // devices)))


def to_global(local_batch, mesh: Mesh):
    """This process's part of a batch (numpy tree) -> globally sharded ``jax.Array`` tree."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x),
                        local_batch)


def parts_to_global(parts, mesh: Mesh):
    """This process's batch as consecutive parts (numpy trees; their rows in order are the
    process's rows) -> the globally sharded ``jax.Array`` tree :func:`to_global` makes of
    the joined batch, with each device's rows put on it from its part (a view, no copy)."""
    if len(parts) == 1:
        return to_global(parts[0], mesh)
    sharding = batch_sharded(mesh)
    return jax.tree.map(lambda *leaves: _leaf_from_parts(leaves, sharding), *parts)


def _leaf_from_parts(leaves, sharding: NamedSharding) -> jax.Array:
    ends = np.cumsum([len(x) for x in leaves])
    rows = int(ends[-1])
    shape = (rows * jax.process_count(), *leaves[0].shape[1:])
    index = {d: i[0].indices(shape[0])[:2]
             for d, i in sharding.addressable_devices_indices_map(shape).items()}
    first = min(start for start, _ in index.values())
    if max(stop for _, stop in index.values()) - first != rows:  # not one block of rows
        return to_global(np.concatenate(leaves), sharding.mesh)
    devices, pieces, joined = [], [], None
    for device, (start, stop) in index.items():
        start, stop = start - first, stop - first
        k = int(np.searchsorted(ends, start, side="right"))
        offset = int(ends[k - 1]) if k else 0
        if stop <= ends[k]:  # within part k (parts = local devices: exactly part k)
            piece = leaves[k][start - offset:stop - offset]
        else:
            joined = np.concatenate(leaves) if joined is None else joined
            piece = joined[start:stop]
        devices.append(device)
        pieces.append(piece)
    arrays = jax.device_put(pieces, devices)
    return jax.make_array_from_single_device_arrays(shape, sharding, arrays)


def to_host(tree):
    """Fetch a replicated (or fully addressable) tree to numpy.

    A replicated array is read from this process's own copy, without any collective, so one
    process alone may call it (e.g. process 0 saving the best model)."""

    def fetch(x):
        if isinstance(x, jax.Array) and x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(fetch, tree)
