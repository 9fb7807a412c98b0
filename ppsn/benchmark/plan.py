"""``pipeline --plan``: the loader a config gives a host, computed without running anything
(no data read, no device touched), so that a host can be sized before it is rented.

``--cpus N`` (the CPUs one process may use, as ``PPSN_CPUS``), ``--local_devices D`` (its
accelerators), ``--host_memory_gb M`` (default: this machine's) and ``--host_cpus`` (the
host's CPUs, default ``--cpus``: one process per host) give the plan of
:func:`ppsn.data.loading.loading_plan` for the config's per-process train batch, made in
``parts`` (one per local device): ``batch_bytes`` is one part's.
"""

from __future__ import annotations

import math


def add_arguments(p) -> None:
    p.add_argument("--plan", action="store_true",
                   help="print the loader plan of --config for --cpus / --local_devices (runs nothing)")
    p.add_argument("--config", default=None, help="a config file (with --plan)")
    p.add_argument("--cpus", type=int, default=None, help="CPUs of one process (with --plan)")
    p.add_argument("--local_devices", type=int, default=1,
                   help="accelerators of one process (with --plan)")
    p.add_argument("--processes", type=int, default=1,
                   help="processes in the job (with --plan): the per-process batch is the "
                        "global batch / (processes)")
    p.add_argument("--host_memory_gb", type=float, default=None,
                   help="the host's memory (with --plan; default this machine's)")
    p.add_argument("--host_cpus", type=int, default=None,
                   help="the host's CPUs (with --plan; default --cpus)")
    p.add_argument("--backend", choices=("gpu", "tpu", "cpu"), default="gpu",
                   help="the devices' kind (with --plan)")


def run(args) -> dict:
    from ppsn.benchmark.distill import load_config
    from ppsn.data import datasets, loading, loading_plan

    if not args.config or not args.cpus:
        raise SystemExit("error: --plan needs --config and --cpus")
    config = load_config(args.config)
    spec = datasets.clip_spec(config.data, "train")
    local_batch = config.batch_size // args.processes
    parts = loading_plan.batch_parts(local_batch, args.local_devices)
    batch_bytes = local_batch // parts * math.prod(spec.shape)
    memory = int(args.host_memory_gb * 2**30) if args.host_memory_gb else None
    plan = loading.loading_plan(config.data, args.cpus, local_devices=args.local_devices,
                                 accelerator=args.backend != "cpu", batch_bytes=batch_bytes,
                                 host_memory=memory, host_cpus=args.host_cpus or args.cpus,
                                 parts=parts)
    return {"benchmark": "pipeline", "plan": True, "config": args.config, "cpus": args.cpus,
            "local_devices": args.local_devices, "backend": args.backend,
            "batch_clips": local_batch, "clip_shape": list(spec.shape), **plan.as_dict()}
