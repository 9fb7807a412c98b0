"""``train_step``: the real jitted train step (``steps.jit_steps`` over a task: normalization,
mixup, forward, backward, optimizer) on all local devices.

Reports ``images_per_s`` (frames through the backbone), ``step_ms``, the XLA-counted FLOPs,
``mfu`` where the device's peak is known and the peak device memory where the backend reports
it. ``--conv_impl`` (default ``auto``: what training uses on this backend, see
:func:`ppsn.backend.conv_impl`) and ``--amp`` (default ``auto``: bf16 on GPU/TPU) choose the
step; ``conv_impl`` and ``precision`` report what they resolved to. Unless ``--no_baseline``,
the same step with XLA's plain convolution everywhere (``conv_impl='xla'``, the naive Flax
port) is timed in the same process and ``speedup_vs_naive`` reported; where the step already
uses it (``auto`` on GPU/TPU) there is nothing to compare and ``baseline`` says so.
``--teacher_depth D`` also times the ``kd`` task's step (plus a frozen ResNet-D teacher's
forward) and reports ``kd_step_time_ratio`` against the plain step of
the same run and both optimizer-state sizes (equal: the teacher has none).
"""

from __future__ import annotations

import time

import numpy as np

from ppsn.benchmark import timing

# Dense peak FLOP/s by device kind (for MFU), from the vendors' data sheets.
PEAK_FLOPS = {
    "NVIDIA H100 80GB HBM3": {"bf16": 989e12, "fp32": 67e12},
    "NVIDIA H100": {"bf16": 989e12, "fp32": 67e12},
    "NVIDIA H200": {"bf16": 989e12, "fp32": 67e12},
    "NVIDIA A100-SXM4-80GB": {"bf16": 312e12, "fp32": 19.5e12},
    "TPU v4": {"bf16": 275e12, "fp32": 275e12 / 4},
    "TPU v5 lite": {"bf16": 197e12, "fp32": 197e12 / 4},
}


def add_parser(sub):
    t = sub.add_parser("train_step", help="jitted train step throughput")
    t.add_argument("--depth", type=int, default=50)
    t.add_argument("--batch", type=int, default=4, help="clips per device")
    t.add_argument("--num_seg", type=int, default=3)
    t.add_argument("--size", type=int, default=224)
    t.add_argument("--amp", nargs="?", const="true", default="auto",
                   help="auto (bf16 on GPU/TPU, float32 on CPU), true (--amp alone) or false")
    t.add_argument("--conv_impl", default="auto", help="auto, matmul, im2col or xla")
    t.add_argument("--steps", type=int, default=5)
    t.add_argument("--warmup", type=int, default=1)
    t.add_argument("--no_baseline", action="store_true", help="skip the naive-convolution run")
    t.add_argument("--teacher_depth", type=int, default=0,
                   help="also time kd distillation from a frozen teacher of this depth (the "
                   "overhead is reported as kd_step_time_ratio)")
    return t


def _config(args, conv_impl: str):
    from ppsn.recipe import pptsn_config

    config = pptsn_config()
    config.model.depth, config.model.num_classes = args.depth, 400
    config.model.conv_impl = conv_impl
    config.amp = str(args.amp)
    return config


def _task(args, conv_impl: str, teacher_depth: int):
    import jax

    from ppsn.train import initialize, tasks

    config = _config(args, conv_impl)
    if not teacher_depth:
        return tasks.Task(config), config
    config.distill.mode, config.distill.teacher_depth = "kd", teacher_depth
    teacher = tasks.teacher_model(config, jax.numpy.float32)
    return tasks.KdTask(config, teacher_variables=initialize.scratch_variables(teacher, 1)), config


def time_train_step(args, conv_impl: str, teacher_depth: int = 0) -> dict:
    import jax

    from ppsn import parallel
    from ppsn.train import steps

    task, config = _task(args, conv_impl, teacher_depth)
    mesh = parallel.make_mesh(jax.local_devices())
    cfg = steps.step_config(task, config, steps_per_epoch=1000)
    train, _ = steps.jit_steps(cfg, mesh)
    rep = parallel.replicated(mesh)
    state = jax.device_put(steps.create_state(task.scratch_variables(0), cfg.tx), rep)
    rng = jax.device_put(jax.random.PRNGKey(0), rep)
    global_batch = args.batch * mesh.devices.size
    data = np.random.default_rng(0)
    batch = parallel.to_global({
        "frames": data.integers(0, 256, (global_batch, args.num_seg, args.size, args.size, 3),
                                dtype=np.uint8),
        "label": data.integers(0, 400, global_batch).astype(np.int32)}, mesh)
    start = time.perf_counter()
    compiled = train.jitted.lower(state, batch, rng, train.step_constants).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0

    def step():
        nonlocal state
        state, metrics = compiled(state, batch, rng, train.step_constants)
        return metrics

    step_s = timing.seconds_per_call(step, args.steps, args.warmup)
    out = {"conv_impl": task.model.conv_impl, "step_ms": round(step_s * 1e3, 1),
           "precision": jax.numpy.dtype(task.model.dtype).name,
           "images_per_s": round(global_batch * args.num_seg / step_s, 2),
           "compile_s": round(compile_s, 1), "flops_per_step": flops,
           "optimizer_state_bytes": sum(x.nbytes for x in jax.tree.leaves(state.opt_state))}
    device = jax.local_devices()[0]
    peak = PEAK_FLOPS.get(device.device_kind, {}).get(
        "bf16" if task.model.dtype == jax.numpy.bfloat16 else "fp32")
    if peak and flops:
        out["mfu"] = round(flops / step_s / (peak * mesh.devices.size), 4)
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        out["peak_memory_gib"] = round(stats["peak_bytes_in_use"] / 2**30, 2)
    return out


def run(args) -> dict:
    import jax

    from ppsn import backend

    result = time_train_step(args, args.conv_impl)
    out = {"benchmark": "train_step", "depth": args.depth, "batch_per_device": args.batch,
           "num_seg": args.num_seg, "size": args.size,
           "devices": jax.local_device_count(), "device": jax.local_devices()[0].device_kind,
           **result}
    if args.teacher_depth:
        kd = time_train_step(args, args.conv_impl, args.teacher_depth)
        out["teacher_depth"] = args.teacher_depth
        out["kd_step_ms"] = kd["step_ms"]
        out["kd_images_per_s"] = kd["images_per_s"]
        out["kd_step_time_ratio"] = round(kd["step_ms"] / result["step_ms"], 3)
        out["kd_optimizer_state_bytes"] = kd["optimizer_state_bytes"]  # == plain training's
    if not args.no_baseline and backend.conv_impl(args.conv_impl) == "xla":
        out["baseline"] = "none: the step already uses XLA's convolutions"
    elif not args.no_baseline:
        base = time_train_step(args, "xla")
        out["baseline"] = "conv_impl=xla"
        out["naive_images_per_s"] = base["images_per_s"]
        out["speedup_vs_naive"] = round(result["images_per_s"] / base["images_per_s"], 2)
    return out
