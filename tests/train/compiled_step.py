"""Compiles the real train step on all local devices and prints, as JSON, what its program
communicates, and where mixup's partners come from.

    XLA_FLAGS="--xla_force_host_platform_device_count=8 --xla_dump_to=DIR \
      --xla_dump_hlo_pass_re=spmd-partitioning" python -m tests.train.compiled_step [DIR]

Run by ``tests/train/test_steps.py`` in a fresh process (the CPU device count is fixed at JAX
start-up). Per global batch size: the count of each collective in the compiled HLO and the
bytes the all-reduces carry; the gradient and BatchNorm-statistics bytes to compare them with;
under bf16, with global and per-device BatchNorm statistics (``model.sync_bn``), the
collectives by dtype of the compiled program and of the program right after SPMD partitioning
(read from DIR; the CPU compiler later promotes bf16 all-reduces to f32, other compilers do
not); each device's BatchNorm statistics against 1-device calls; and, for one mixup draw,
each row's partner row.
"""

import glob
import json
import os
import sys

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from ppsn import parallel
from ppsn.benchmark import hlo
from ppsn.recipe import pptsn_config
from ppsn.train import steps, tasks


def collectives(text: str) -> tuple[dict, int]:
    """Counts of each collective op and the bytes of the all-reduces' results."""
    found = hlo.collectives(text)
    return ({kind: hlo.total(found, kind, "count") for kind in found},
            hlo.total(found, "all-reduce"))


def toy(amp=False, sync_bn=True):
    config = pptsn_config()
    config.model.depth, config.model.num_classes = 18, 10
    config.amp, config.model.sync_bn = str(amp), sync_bn
    task = tasks.Task(config)
    cfg = steps.step_config(task, config, steps_per_epoch=10)
    state = jax.eval_shape(lambda: steps.create_state(task.scratch_variables(0), cfg.tx))
    return task, cfg, state


def compile_step(mesh, cfg, state, batch_size, dump_dir=None):
    """The compiled train step's HLO text, and (with ``dump_dir``, where XLA_FLAGS dumps
    the programs) its HLO right after SPMD partitioning."""
    train, _ = steps.jit_steps(cfg, mesh)
    batch = {"frames": jax.ShapeDtypeStruct((batch_size, 1, 32, 32, 3), np.uint8),
             "label": jax.ShapeDtypeStruct((batch_size,), np.int32)}
    rng = jax.ShapeDtypeStruct((2,), np.uint32)
    before = set(glob.glob(f"{dump_dir}/*after_spmd-partitioning*")) if dump_dir else set()
    text = train.jitted.lower(state, batch, rng, train.step_constants).compile().as_text()
    if not dump_dir:
        return text, None
    new = sorted(set(glob.glob(f"{dump_dir}/*after_spmd-partitioning*")) - before,
                 key=os.path.getsize)
    return text, open(new[-1]).read()  # the train step: the largest program compiled


def bn_statistics(mesh, sync_bn, variables):
    """Each device's new BatchNorm statistics of a training call on its shard (``[devices,
    ...]``), and those of 1-device calls on each shard and on the whole batch."""
    task, _, _ = toy(sync_bn=sync_bn)
    n = mesh.devices.size
    images = np.random.default_rng(1).normal(size=(2 * n, 1, 32, 32, 3)).astype(np.float32)
    rng = jax.random.PRNGKey(0)

    def per_device(images):
        _, stats = task.apply_train(task.model, variables, images, rng, parallel.BATCH_AXES)
        return jax.tree.map(lambda x: x[None], stats)

    sharded = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P(parallel.BATCH_AXES),
                                    out_specs=P(parallel.BATCH_AXES)))(images)
    alone = jax.jit(lambda x: task.apply_train(task.model, variables, x, rng)[1])
    mean = lambda stats: np.asarray(stats["backbone"]["conv1_1"]["bn"]["mean"])  # noqa: E731
    return {"sharded": mean(sharded).tolist(),
            "shards_alone": [mean(alone(images[2 * i:2 * i + 2])).tolist() for i in range(n)],
            "whole_alone": mean(alone(images)).tolist()}


def main():
    dump_dir = sys.argv[1] if len(sys.argv) > 1 else None
    mesh = parallel.make_mesh()
    task, cfg, state = toy()
    out = {"devices": mesh.devices.size,
           "grad_bytes": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.params)),
           "bn_stats_bytes": sum(x.size * x.dtype.itemsize
                                 for x in jax.tree.leaves(state.batch_stats))}
    for per_device in (1, 2):
        b = per_device * mesh.devices.size
        ops, reduce_bytes = collectives(compile_step(mesh, cfg, state, b)[0])
        out[f"batch{b}"] = {"ops": ops, "all_reduce_bytes": reduce_bytes}
    # bf16 compute, global (sync) and per-device BatchNorm statistics
    variables = task.scratch_variables(0)  # the same for both (sync_bn is not a variable)
    for sync_bn in (True, False):
        _, cfg16, state16 = toy(amp=True, sync_bn=sync_bn)
        text, partitioned = compile_step(mesh, cfg16, state16, mesh.devices.size, dump_dir)
        out[f"bf16_sync_bn_{sync_bn}"] = {
            "compiled": hlo.collectives(text),
            "partitioned": hlo.collectives(partitioned) if partitioned else None}
        out[f"bn_statistics_sync_bn_{sync_bn}"] = bn_statistics(mesh, sync_bn, variables)

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
