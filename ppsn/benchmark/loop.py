"""``loop``: the real training loop (``ppsn.train.loop``: ``setup``, ``restore_or_initialize``,
``train_steps`` with its device prefetch, asynchronous metrics and logging; the jitted step from
``steps.jit_steps``; the Grain pipeline decoding JPEG frames) on a generated toy dataset with a
small model, on all local devices.

After ``--warmup`` steps (compilation), times ``--steps`` steps and reports:

* ``step_ms``: wall time per step;
* ``input_wait_fraction``: the share of that time the loop waited for a batch (0 when the
  pipeline keeps up: the prefetched batches were on the devices before the step needed them);
* ``device_wait_fraction``: the share it waited for the device to finish earlier steps (the
  host is ahead: what a device-bound loop should show);
* ``host_overhead_ms``: per step, the host time that is neither of those waits (dispatching
  the step, logging, bookkeeping): while it stays below the device's step time, the host
  never stalls the device.
"""

from __future__ import annotations

import os
import tempfile
import time


def add_parser(sub):
    p = sub.add_parser("loop", help="the real training loop: input wait and host overhead")
    p.add_argument("--depth", type=int, default=18)
    p.add_argument("--size", type=int, default=56, help="training crop (frames scaled to 8/7)")
    p.add_argument("--num_seg", type=int, default=3)
    p.add_argument("--batch", type=int, default=8, help="clips per device")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, default=0, help="Grain worker processes")
    p.add_argument("--amp", default="auto", help="auto (bf16 on GPU/TPU), true or false")
    return p


def _config(args, data_dir: str, devices: int):
    from ppsn.recipe import toy_config

    config = toy_config()
    config.model.depth = args.depth
    config.data.data_prefix = data_dir
    for split in ("train", "val", "test"):
        setattr(config.data, f"{split}_list", os.path.join(data_dir, f"{split}_frames.list"))
    config.data.generate_toy = False
    config.data.num_seg = args.num_seg
    config.data.target_size = args.size
    config.data.short_size = args.size * 8 // 7
    config.data.num_workers = args.workers
    config.batch_size = args.batch * devices
    config.amp = str(args.amp)
    config.validate = False
    config.log_interval = args.warmup
    config.max_steps = args.warmup + args.steps + 1  # no end-of-run checkpoint inside the timing
    config.checkpoint_every_steps = config.max_steps + 1
    config.compilation_cache_dir = "none"
    return config


def run(args) -> dict:
    import jax

    from ppsn.data import toy
    from ppsn import train_mode
    from ppsn.train import loop, reporting

    devices = jax.device_count()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = os.path.join(tmp, "data")
        per_class = max(4, -(-args.batch * devices * (args.warmup + args.steps + 2) // 10))
        toy.generate(data_dir, num_frames=12, width=160, height=120,
                     videos_per_class={"train": per_class, "val": 1, "test": 1})
        config = _config(args, data_dir, devices)
        run_ = train_mode.setup(config, os.path.join(tmp, "work"))
        try:
            state, rng, _ = loop.restore_or_initialize(run_)
            progress = loop.Progress(meter=reporting.Meter(first_step=0), best_top1=-1.0)
            state = loop.train_steps(run_, progress, state, rng, 0, args.warmup)  # compiles
            progress.data_wait_s = progress.device_wait_s = 0.0
            start = time.perf_counter()
            loop.train_steps(run_, progress, state, rng, args.warmup, args.warmup + args.steps)
            wall = time.perf_counter() - start
        finally:
            run_.ckpt.close()
            run_.writer.close()
    steps = args.steps
    host = wall - progress.data_wait_s - progress.device_wait_s
    return {"benchmark": "loop", "depth": args.depth, "size": args.size,
            "num_seg": args.num_seg, "batch_per_device": args.batch, "devices": devices,
            "device": jax.local_devices()[0].device_kind, "workers": args.workers,
            "precision": jax.numpy.dtype(run_.task.model.dtype).name,
            "prefetch_batches": loop.PREFETCH_BATCHES, "steps": steps,
            "step_ms": round(wall / steps * 1e3, 2),
            "input_wait_fraction": round(progress.data_wait_s / wall, 4),
            "device_wait_fraction": round(progress.device_wait_s / wall, 4),
            "host_overhead_ms": round(host / steps * 1e3, 2)}
