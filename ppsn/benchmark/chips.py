"""Accelerator chips that ``python -m ppsn.benchmark aot`` compiles for: data-sheet peaks and
how a topology name maps to a deviceless JAX topology.

``PEAKS``: dense bf16 FLOP/s, HBM bandwidth (bytes/s) and HBM capacity (bytes) per chip, from
the vendors' data sheets (Cloud TPU system architecture pages for v4, v5e, v5p; NVIDIA's H100
SXM, H200 SXM and A100 SXM 80GB data sheets). They give a roofline **bound**, never a
measurement. ``TARGETS``: the GPU chips whose XLA device description (a GpuTargetConfigProto
in text form, ``ppsn/benchmark/targets/NAME.txtpb``) the package keeps for a deviceless CUDA
compile; only H100 so far (copied from XLA's ``h100_sxm.txtpb``, fields the 0.10.2 plugin knows).

Topology names: a TPU topology as libtpu spells it (``v5e:2x4``, ``v4:2x2x2``, ``v5p:2x2x1``),
or ``[HOSTSx]Nx<gpu>`` for NVIDIA hosts of N GPUs (``8xh100``, ``2x8xh100``).
"""

from __future__ import annotations

import dataclasses
import os
import re

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Peak:
    flops: float          # dense bf16 FLOP/s
    hbm_bandwidth: float  # bytes/s
    hbm_bytes: int
    source: str


PEAKS = {
    "v4": Peak(275e12, 1200e9, 32 * GIB, "cloud.google.com/tpu/docs/v4"),
    "v5e": Peak(197e12, 819e9, 16 * GIB, "cloud.google.com/tpu/docs/v5e"),
    "v5p": Peak(459e12, 2765e9, 95 * GIB, "cloud.google.com/tpu/docs/v5p"),
    "h100": Peak(989e12, 3.35e12, 80 * 10**9, "NVIDIA H100 SXM data sheet (dense BF16)"),
    "h200": Peak(989e12, 4.8e12, 141 * 10**9, "NVIDIA H200 SXM data sheet (dense BF16)"),
    "a100": Peak(312e12, 2.039e12, 80 * 10**9, "NVIDIA A100 SXM 80GB data sheet (dense BF16)"),
}
TARGETS = os.path.join(os.path.dirname(__file__), "targets")
_GPU = re.compile(r"^(?:(\d+)x)?(\d+)x([a-z]\d+)$")


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str
    platform: str  # 'tpu' or 'gpu'
    chip: str      # a PEAKS key
    devices: tuple

    @property
    def chips(self) -> int:
        return len(self.devices)

    @property
    def hosts(self) -> int:
        return len({d.process_index for d in self.devices})


def chip_of(name: str) -> str:
    """``'v5e'`` of ``'v5e:2x4'``, ``'h100'`` of ``'2x8xh100'``."""
    m = _GPU.match(name)
    return m.group(3) if m else name.split(":")[0]


def get_topology(name: str) -> Topology:
    """The deviceless devices of topology ``name`` (needs libtpu for TPUs, the CUDA plugin
    for GPUs, and ``JAX_PLATFORMS=cpu``: see :mod:`ppsn.benchmark.aot`)."""
    from jax.experimental import topologies

    chip = chip_of(name)
    if chip not in PEAKS:
        raise ValueError(f"--topology {name}: unknown chip {chip!r} (known: {', '.join(PEAKS)})")
    m = _GPU.match(name)
    if not m:
        devices = topologies.get_topology_desc(topology_name=name, platform="tpu").devices
        if len({tuple(d.coords) for d in devices}) < len(devices):
            # One device per TensorCore (libtpu's deviceless default for v4); a run on a v4 VM
            # sees one device per chip ("megacore"), so that is what is compiled.
            devices = topologies.get_topology_desc(topology_name=name, platform="tpu",
                                                   chip_config_name="megacore").devices
        return Topology(name, "tpu", chip, tuple(devices))
    target = os.path.join(TARGETS, f"{chip}.txtpb")
    if not os.path.exists(target):
        raise ValueError(f"--topology {name}: no XLA target description for {chip} "
                         f"(have: {', '.join(sorted(available_targets()))})")
    hosts, per_host = int(m.group(1) or 1), int(m.group(2))
    with open(target) as f:
        desc = topologies.get_topology_desc(topology_name=chip, platform="cuda",
                                            topology=f"1x{hosts}x{per_host}",
                                            target_config=f.read())
    return Topology(name, "gpu", chip, tuple(desc.devices))


def available_targets() -> list[str]:
    return [f[:-len(".txtpb")] for f in os.listdir(TARGETS) if f.endswith(".txtpb")]
