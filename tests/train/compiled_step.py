"""Compiles the real train step on all local devices and prints, as JSON, what its program
communicates, and where mixup's partners come from.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.train.compiled_step

Run by ``tests/train/test_steps.py`` in a fresh process (the CPU device count is fixed at JAX
start-up). Per global batch size: the count of each collective in the compiled HLO and the
bytes the all-reduces carry; the gradient and BatchNorm-statistics bytes to compare them with;
and, for one mixup draw, each row's partner row.
"""

import collections
import json
import re

import jax
import numpy as np

from ppsn import parallel
from ppsn.recipe import pptsn_config
from ppsn.train import steps, tasks

COLLECTIVES = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter",
               "collective-broadcast", "ragged-all-to-all")
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
               "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}


def collectives(hlo: str) -> tuple[dict, int]:
    """Counts of each collective op and the bytes of the all-reduces' results."""
    ops, reduce_bytes = collections.Counter(), 0
    pattern = re.compile(r"=\s*(.+?)\s+(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
    for line in hlo.splitlines():
        m = pattern.search(line)
        if not m:
            continue
        ops[m.group(2)] += 1
        if m.group(2) == "all-reduce":
            for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", m.group(1)):
                size = int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
                reduce_bytes += DTYPE_BYTES[dtype] * size
    return dict(ops), reduce_bytes


def main():
    mesh = parallel.make_mesh()
    config = pptsn_config()
    config.model.depth, config.model.num_classes = 18, 10
    task = tasks.Task(config)
    cfg = steps.step_config(task, config, steps_per_epoch=10)
    train, _ = steps.jit_steps(cfg, mesh)
    state = jax.eval_shape(lambda: steps.create_state(task.scratch_variables(0), cfg.tx))
    rng = jax.ShapeDtypeStruct((2,), np.uint32)
    out = {"devices": mesh.devices.size,
           "grad_bytes": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.params)),
           "bn_stats_bytes": sum(x.size * x.dtype.itemsize
                                 for x in jax.tree.leaves(state.batch_stats))}
    for per_device in (1, 2):
        b = per_device * mesh.devices.size
        batch = {"frames": jax.ShapeDtypeStruct((b, 1, 32, 32, 3), np.uint8),
                 "label": jax.ShapeDtypeStruct((b,), np.int32)}
        hlo = train.jitted.lower(state, batch, rng, train.constants).compile().as_text()
        ops, reduce_bytes = collectives(hlo)
        out[f"batch{b}"] = {"ops": ops, "all_reduce_bytes": reduce_bytes}

    # One mixup draw over a batch whose rows carry their own index as label and image.
    b = 4 * mesh.devices.size
    rows = parallel.to_global({"x": np.arange(b, dtype=np.float32)[:, None],
                               "y": np.arange(b, dtype=np.int32)}, mesh)
    mix = jax.jit(lambda x, y: steps.mixup_per_shard(x, y, jax.random.PRNGKey(3), 0.2, mesh))
    mixed, partner, lam = parallel.to_host(jax.jit(lambda *a: mix(*a),
                                                   out_shardings=parallel.replicated(mesh))(
        rows["x"], rows["y"]))
    out["mixup"] = {"rows_per_device": b // mesh.devices.size, "partner": partner.tolist(),
                    "lam": float(lam), "mixed": mixed[:, 0].tolist()}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
