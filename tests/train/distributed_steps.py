"""Runs a few real train steps of a tiny TSN and prints the losses as JSON.

    python -m tests.train.distributed_steps [--mesh_devices N[,N...]]

Launched by the tests in fresh processes (the CPU device count is fixed at JAX start-up):
with ``XLA_FLAGS=--xla_force_host_platform_device_count=K`` for several local devices, and
with ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` for several
processes (each feeds its own rows of the global batch, in one part per local device as the
train loop does: ``parts_match_whole`` says they make the same arrays as the rows joined).
``--mixup_alpha 0`` turns mixup off: each device mixes its own shard, so which examples are
mixed depends on the device count. Several ``--mesh_devices`` run the same steps from the same
state on a mesh of each size, one JSON line each (one process: JAX starts and the model
initializes once).
"""

import argparse
import json

import jax
import numpy as np

from ppsn import parallel
from ppsn.recipe import pptsn_config
from ppsn.train import steps, tasks

GLOBAL_BATCH = 8


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mesh_devices", default="0", help="0: all devices; a comma list: "
                        "one run on a mesh of each size")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--mixup_alpha", type=float, default=0.2)
    args = parser.parse_args()
    parallel.initialize_distributed()
    config = pptsn_config()
    config.model.depth, config.model.num_classes = 18, 10
    config.loss.mixup_alpha = args.mixup_alpha
    # Gentle steps: with the recipe's x5/x10 fc rates random data makes the loss grow, which
    # amplifies float rounding (summation order differs between device counts).
    config.optim.base_lr, config.optim.warmup_start_lr = 0.002, 0.001
    config.optim.fc_weight_lr_mult = config.optim.fc_bias_lr_mult = 1.0
    task = tasks.Task(config)
    variables = jax.tree.map(np.asarray, task.scratch_variables(seed=0))
    for count in args.mesh_devices.split(","):
        devices = jax.devices()[: int(count) or None]
        print(json.dumps(run(task, config, variables, devices, args.steps)), flush=True)


def run(task, config, variables, devices, num_steps):
    """``num_steps`` train steps of ``task`` from ``variables`` over a mesh of ``devices``."""
    mesh = parallel.make_mesh(devices)
    cfg = steps.step_config(task, config, steps_per_epoch=10)
    train, _ = steps.jit_steps(cfg, mesh)
    state = jax.device_put(steps.create_state(variables, cfg.tx), parallel.replicated(mesh))
    rng = jax.device_put(jax.random.PRNGKey(0), parallel.replicated(mesh))
    data = np.random.default_rng(0)
    rows = GLOBAL_BATCH // jax.process_count()
    mine = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
    parts = sum(d.process_index == jax.process_index() for d in devices)
    losses, parts_match = [], True
    for _ in range(num_steps):
        batch = {"frames": data.integers(0, 256, (GLOBAL_BATCH, 3, 32, 32, 3), dtype=np.uint8),
                 "label": data.integers(0, 10, GLOBAL_BATCH).astype(np.int32)}
        local = {k: v[mine] for k, v in batch.items()}
        split = [dict(zip(local, cut)) for cut in zip(*(np.split(v, parts)
                                                       for v in local.values()))]
        fed = parallel.parts_to_global(split, mesh)
        parts_match &= _same_arrays(fed, parallel.to_global(local, mesh))
        state, metrics = train(state, fed, rng)
        losses.append(float(parallel.to_host(metrics)["loss"]))
    checksum = float(sum(np.abs(np.asarray(jax.device_get(x), np.float64)).sum()
                         for x in jax.tree.leaves(state.params)))
    return {"process": jax.process_index(), "devices": len(devices), "losses": losses,
            "param_checksum": checksum, "parts": parts, "parts_match_whole": bool(parts_match)}


def _same_arrays(a, b) -> bool:
    """The same global arrays: shape, sharding, and each local device's rows."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if x.shape != y.shape or x.sharding != y.sharding:
            return False
        shards = {s.device: np.asarray(s.data) for s in y.addressable_shards}
        if not all(np.array_equal(np.asarray(s.data), shards[s.device])
                   for s in x.addressable_shards):
            return False
    return True


if __name__ == "__main__":
    main()
