"""The device mesh: slices of a multi-slice TPU stay together (stand-in device objects)."""

import dataclasses
import itertools

import jax
import numpy as np
import pytest

from ppsn import parallel


@dataclasses.dataclass(frozen=True)
class FakeDevice:
    """What jax's mesh_utils reads from a device."""

    id: int
    slice_index: int
    coords: tuple
    platform: str = "tpu"
    device_kind: str = "TPU v4"
    core_on_chip: int = 0
    process_index: int = 0


def _two_v4_slices():
    """Two TPU v4 slices of 2x2x2 chips, listed with the slices interleaved."""
    chips = list(itertools.product(range(2), range(2), range(2)))
    devices = [FakeDevice(id=2 * i + s, slice_index=s, coords=(x, y, z))
               for i, (z, y, x) in enumerate(chips) for s in range(2)]
    return sorted(devices, key=lambda d: d.id)


def test_multi_slice_devices_are_grouped_by_slice():
    devices = _two_v4_slices()
    assert [d.slice_index for d in devices[:4]] == [0, 1, 0, 1]  # the flat order mixes them
    grid = parallel.device_grid(devices)
    assert grid.shape == (2, 8)  # [slice, data]: the batch axis splits over both
    for s in range(2):
        row = list(grid[s])
        assert {d.slice_index for d in row} == {s}
        assert sorted(d.id for d in row) == sorted(d.id for d in devices if d.slice_index == s)
    # A reduction over the batch meets the other slice only after the 8 devices of its own.
    flat = list(grid.reshape(-1))
    assert [d.slice_index for d in flat] == [0] * 8 + [1] * 8


def test_one_slice_or_gpus_use_create_device_mesh():
    gpus = [FakeDevice(id=i, slice_index=0, coords=(), platform="gpu",
                       device_kind="NVIDIA H100 80GB HBM3") for i in (3, 0, 2, 1)]
    grid = parallel.device_grid(gpus)
    assert grid.shape == (1, 4) and [d.id for d in grid[0]] == [0, 1, 2, 3]  # by id
    one_slice = [d for d in _two_v4_slices() if d.slice_index == 1]
    grid = parallel.device_grid(one_slice)
    assert grid.shape == (1, 8) and {d.slice_index for d in grid[0]} == {1}


def test_slices_of_different_sizes_are_refused():
    devices = _two_v4_slices()[:-1]
    with pytest.raises(ValueError):
        parallel.device_grid(devices)


def test_the_real_mesh_has_both_axes_and_splits_the_batch_over_them():
    mesh = parallel.make_mesh()
    assert mesh.axis_names == parallel.BATCH_AXES and mesh.devices.shape == (1, len(jax.devices()))
    batch = parallel.to_global({"x": np.arange(len(jax.devices()) * 2)}, mesh)
    assert batch["x"].sharding.spec == jax.sharding.PartitionSpec(parallel.BATCH_AXES)
    assert "mesh slice=1 x data=" in parallel.describe(mesh)
