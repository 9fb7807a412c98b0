"""``aot``: the production program compiled for a TPU topology or NVIDIA hosts on this machine
(no accelerator needed), and what its compiler says of it.

    python -m ppsn.benchmark aot --topology v5e:2x4 --config configs/pptsn_k400_frames.py \\
        [--config.amp=true ...] [--per_chip_batch 32] [--mode train|test] [--max_batch]
        [--max_tries 4]

Compiles what a run compiles: the train step of ``steps.jit_train`` (the task, mixup, the
per-shard loss and float32 gradient all-reduce) or test mode's scoring function
(``test_mode.score_fn``), over ``parallel.make_mesh`` of the topology's devices, with the
target's choices (``config.amp``, ``model.conv_impl`` and the views per call resolved for
'tpu' / 'gpu' by :mod:`ppsn.backend`). TPU topologies need libtpu (``pip install
'ppsn[tpu]'``), NVIDIA ones the CUDA plugin alone (``jax-cuda12-plugin`` and
``jax-cuda12-pjrt`` of jax's version, no NVIDIA libraries: the ``gpu-compile`` extra) and the
device description in ``ppsn/benchmark/targets``. The command runs JAX on its CPU backend.

Prints one JSON line: ``topology``, ``chips``, ``hosts``, ``per_chip_batch``,
``hbm_bytes_per_chip`` (arguments + outputs + temporaries - aliased, from
``memory_analysis()``), ``hbm_capacity_bytes``, ``flops_per_step_per_chip`` and
``bytes_accessed_per_step_per_chip`` (``cost_analysis()`` of the compiled program on TPU; the
GPU compiler gives none, so there the FLOPs are XLA's count of the same program lowered, not
compiled, for one CPU device at the per-chip batch, ``flops_source`` says which, and bytes are
null),
``collectives`` ``{kind: {dtype: {"count", "bytes"}}}`` from the compiled HLO, and
``bound_images_per_s_per_chip``: a roofline **bound** (images, i.e. frames or TenCrop views,
per step over ``max(FLOPs / peak FLOP/s, bytes / HBM bandwidth)``, data-sheet peaks in
:mod:`ppsn.benchmark.chips`), never a measurement, and the FLOPs-only
``compute_bound_images_per_s_per_chip``. The TPU compiler's "bytes accessed" sums each
operation's operands and results, on-chip reuse included, so for the R50 step (~1 byte per
FLOP) it is far above any HBM traffic and the combined bound far below what a chip does.

``--max_batch`` (method): HBM per chip is close to affine in the per-chip batch, so two
compiles (the batch b and 2b) give a line; the largest multiple of 8 the line puts within the
chip's HBM is compiled, and each further try moves along the line through the last two
compiles (a secant step of at most 4x, over capacity or refused by the compiler, JAX's int32
array sizes included: halfway back), up to
``--max_tries`` compiles in all (``MAX_TRIES`` by default). When no try was over capacity or
refused the largest batch found is a floor, not the largest that fits: on TPUs the compiler
rematerializes activations as the batch grows, so HBM flattens out and a search needs more
tries to meet the limit. The figures reported are those of the largest batch that
compiled within capacity; ``tried`` lists every compile (batch, HBM bytes or null if refused),
the first of them at the batch asked for, each compile logged to stderr as it ends;
``max_batch_is_floor`` says whether the search ended short of the limit.
"""

from __future__ import annotations

import os
import sys

from ppsn.benchmark import chips, hlo


def add_parser(sub):
    a = sub.add_parser("aot", help="compile the train step or test scoring for a TPU topology "
                       "or NVIDIA hosts (no accelerator needed): memory, FLOPs, collectives")
    a.add_argument("--topology", required=True,
                   help="v5e:2x4, v4:2x2x2, v5p:2x2x1, v5e:4x4 (4 hosts), 8xh100, 2x8xh100")
    a.add_argument("--config", required=True, help="a config file; --config.FIELD=VALUE override")
    a.add_argument("--per_chip_batch", type=int, default=None,
                   help="clips (train) or videos (test) per chip; default: batch_size / 8 in "
                   "train (the recipe's per-GPU batch), 1 in test")
    a.add_argument("--mode", choices=("train", "test"), default="train")
    a.add_argument("--max_batch", action="store_true",
                   help="find the largest per-chip batch that fits the chip's HBM")
    a.add_argument("--max_tries", type=int, default=MAX_TRIES,
                   help="--max_batch: compiles in all, the first at --per_chip_batch")
    return a


def load_config(path: str, overrides: list[str]):
    """The config file with its ``--config.FIELD=VALUE`` overrides, as ``ppsn.main`` reads it."""
    from absl import flags
    from ml_collections import config_flags

    argv = ["aot", f"--config={path}", *overrides]
    saved, sys.argv = sys.argv, argv  # ml_collections finds the overrides in sys.argv
    try:
        values = flags.FlagValues()
        config_flags.DEFINE_config_file("config", None, "config file", flag_values=values)
        values(argv)
        config = values.config
    finally:
        sys.argv = saved
    config.unlock()
    return config


def _use_cpu_backend() -> None:
    """JAX on its CPU backend, libtpu loadable beside other JAX processes (its lock file)."""
    import jax

    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    jax.config.update("jax_platforms", "cpu")


def run(args) -> dict:
    _use_cpu_backend()
    from ppsn import parallel

    config = load_config(args.config, getattr(args, "overrides", []))
    topo = chips.get_topology(args.topology)
    mesh = parallel.make_mesh(list(topo.devices))
    batch = args.per_chip_batch or (max(1, config.batch_size // 8) if args.mode == "train"
                                    else 1)
    peak = chips.PEAKS[topo.chip]
    tried = []
    if args.max_batch:
        if args.max_tries < 2:
            raise ValueError(f"--max_tries {args.max_tries}: the search needs at least 2")
        batch, compiled = largest_batch(config, topo, mesh, args.mode, batch, peak.hbm_bytes,
                                        tried, args.max_tries)
    else:
        compiled = compile_program(config, topo, mesh, batch, args.mode)
    out = {**report(args, config, topo, batch, compiled, peak), "tried": tried}
    if args.max_batch:  # a floor unless some larger try was over capacity or refused
        out["max_batch_is_floor"] = all(t["hbm_bytes"] is not None
                                        and t["hbm_bytes"] <= peak.hbm_bytes for t in tried)
    return out


def compile_program(config, topo, mesh, per_chip_batch: int, mode: str):
    """``(compiled, lowered)`` of the run's program for ``per_chip_batch`` per chip."""
    from ppsn.benchmark import aot_programs

    lower = aot_programs.lower_train if mode == "train" else aot_programs.lower_test
    lowered = lower(config.copy_and_resolve_references(), topo.platform, mesh,
                    per_chip_batch * topo.chips)
    return lowered.compile(), lowered


def hbm_bytes(compiled) -> int:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)


MAX_TRIES = 4
MAX_GROWTH = 4  # the most a try grows the largest batch that fit


def _try(config, topo, mesh, mode, batch, tried: list):
    """``(program, hbm bytes)`` of the batch's program, ``(None, None)`` if it cannot be built:
    the compiler refuses it for memory, or its arrays pass JAX's int32 sizes; the try is
    appended to ``tried`` (with ``refused``: why) and logged."""
    import time

    t0 = time.perf_counter()
    program, used, why = None, None, None
    try:
        program = compile_program(config, topo, mesh, batch, mode)
        used = hbm_bytes(program[0])
    except OverflowError as e:  # e.g. "Python integer ... out of bounds for int32"
        why = f"JAX's int32 array sizes ({e})"
    except Exception as e:  # noqa: BLE001 -- the compiler refusing a batch is "does not fit"
        if "RESOURCE_EXHAUSTED" not in str(e) and "memory" not in str(e).lower():
            raise
        why = "out of memory (compiler)"
    tried.append({"per_chip_batch": batch, "hbm_bytes": used, **({"refused": why} if why else {})})
    print(f"aot: {topo.name} batch {batch}: "
          f"{f'refused: {why}' if why else f'{used / 2**30:.2f} GiB'} "
          f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return program, used


def next_batch(points: dict, capacity: int) -> int | None:
    """The next per-chip batch to compile (a multiple of 8), or None when the search is done:
    ``points`` maps each batch compiled to its HBM bytes (None: refused by the compiler); the
    line through the two largest compiled batches is followed to ``capacity`` (at most
    ``MAX_GROWTH`` times the largest that fit), never past a batch known not to fit (one
    refused by the compiler: halfway to it)."""
    fits = sorted(b for b, u in points.items() if u is not None and u <= capacity)
    if not fits:
        return None
    low = fits[-1]
    over = sorted(b for b in points if b > low)
    measured = sorted((b, u) for b, u in points.items() if u is not None)
    if over and points[over[0]] is None:
        guess = (low + over[0]) // 16 * 8
    elif len(measured) >= 2:
        (b0, u0), (b1, u1) = measured[-2], measured[-1]
        slope = max((u1 - u0) / max(b1 - b0, 1), 1.0)
        # At most MAX_GROWTH x: where the compiler rematerializes, HBM can stay flat or even
        # fall as the batch grows, and the line then points at absurd batches.
        guess = min(int(low + (capacity - points[low]) / slope), MAX_GROWTH * low) // 8 * 8
        if over:
            guess = min(guess, over[0] - 8)
    else:
        guess = 2 * low
    return None if guess <= low or guess in points else guess


def largest_batch(config, topo, mesh, mode, start: int, capacity: int, tried: list,
                  max_tries: int = MAX_TRIES):
    """``(batch, program)``: the largest per-chip batch whose program fits (module doc)."""
    points, programs = {}, {}  # batch -> hbm bytes (None: refused) / its program
    batch = start
    while batch is not None and len(tried) < max_tries:
        programs[batch], points[batch] = _try(config, topo, mesh, mode, batch, tried)
        batch = 2 * start if len(tried) == 1 else next_batch(points, capacity)
        if not any(u is not None and u <= capacity for u in points.values()):
            raise ValueError(f"--per_chip_batch {start} does not fit {topo.name}'s "
                             f"{capacity / 2**30:.1f} GiB; start lower")
    best = max(b for b, u in points.items() if u is not None and u <= capacity)
    return best, programs[best]


def cpu_flops(config, topo, mode: str, per_chip_batch: int) -> float:
    """FLOPs of the same program (the target's dtype and convolutions) lowered for one CPU
    device at the per-chip batch: XLA's cost analysis before optimization, no compile."""
    import jax

    from ppsn import parallel
    from ppsn.benchmark import aot_programs

    lower = aot_programs.lower_train if mode == "train" else aot_programs.lower_test
    mesh = parallel.make_mesh(jax.devices("cpu")[:1])
    lowered = lower(config.copy_and_resolve_references(), topo.platform, mesh, per_chip_batch)
    cost = lowered.cost_analysis() or {}
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost).get("flops", 0.0))


def report(args, config, topo, batch, program, peak) -> dict:
    from ppsn.benchmark import aot_programs

    compiled, lowered = program
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    if cost.get("flops"):
        flops, flops_source = float(cost["flops"]), "compiled program"
        accessed = float(cost.get("bytes accessed", 0.0)) or None
    else:  # the GPU compiler gives no cost analysis
        flops, accessed = cpu_flops(config, topo, args.mode, batch), None
        flops_source = "XLA's count of the unoptimized program lowered for 1 CPU device"
    images = batch * aot_programs.images_per_example(config, args.mode)
    seconds = max(flops / peak.flops, (accessed or 0.0) / peak.hbm_bandwidth)
    return {"benchmark": "aot", "topology": topo.name, "platform": topo.platform,
            "device_kind": topo.devices[0].device_kind, "chips": topo.chips,
            "hosts": topo.hosts, "mode": args.mode, "per_chip_batch": batch,
            "images_per_step_per_chip": images, "max_batch": bool(args.max_batch),
            "hbm_bytes_per_chip": hbm_bytes(compiled), "hbm_capacity_bytes": peak.hbm_bytes,
            "flops_per_step_per_chip": flops, "flops_source": flops_source,
            "bytes_accessed_per_step_per_chip": accessed,
            "collectives": hlo.collectives(compiled.as_text()),
            "bound_images_per_s_per_chip": round(images / seconds, 1) if seconds else None,
            "bound_basis": "FLOPs and HBM bytes" if accessed else "FLOPs only",
            "compute_bound_images_per_s_per_chip":
                round(images * peak.flops / flops, 1) if flops else None,
            "peak": {"flops": peak.flops, "hbm_bandwidth": peak.hbm_bandwidth,
                     "source": peak.source},
            "compute_dtype": aot_programs.compute_dtype_name(config, topo.platform),
            "note": "compiled, not run"}
