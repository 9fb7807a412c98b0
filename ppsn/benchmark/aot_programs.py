"""The programs a run compiles, lowered for another platform's devices from shapes alone
(:mod:`ppsn.benchmark.aot`): the train step of ``steps.jit_train`` and test mode's
``score_fn``, with the target platform's ``config.amp``, ``model.conv_impl`` and views per
call (:mod:`ppsn.backend`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ppsn import backend
from ppsn.data import datasets

STEPS_PER_EPOCH = 1000  # the schedule's length does not change the program


def _sds(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def for_platform(config, platform: str):
    """``config`` with ``model.conv_impl`` resolved for ``platform``; and its compute dtype."""
    config.model.conv_impl = backend.conv_impl(config.model.conv_impl, platform)
    return config, backend.compute_dtype(config.amp, platform)


def compute_dtype_name(config, platform: str) -> str:
    return jnp.dtype(backend.compute_dtype(config.amp, platform)).name


def images_per_example(config, mode: str) -> int:
    return datasets.clip_spec(config.data, mode).views


def lower_train(config, platform: str, mesh, global_batch: int):
    from ppsn.train import initialize, steps, tasks

    config, dtype = for_platform(config, platform)
    kwargs = {}
    if config.distill.mode == "kd":  # the teacher's shapes, not its checkpoint
        teacher = tasks.teacher_model(config, dtype)
        kwargs["teacher_variables"] = jax.eval_shape(
            lambda: initialize.scratch_variables(teacher, 0))
    task = tasks.make_task(config, dtype, **kwargs)
    cfg = steps.step_config(task, config, STEPS_PER_EPOCH)
    state = jax.eval_shape(lambda: steps.create_state(task.scratch_variables(0), cfg.tx))
    spec = datasets.clip_spec(config.data, "train")
    batch = {"frames": jax.ShapeDtypeStruct((global_batch,) + spec.shape, np.uint8),
             "label": jax.ShapeDtypeStruct((global_batch,), np.int32)}
    rng = jax.ShapeDtypeStruct((2,), np.uint32)
    return steps.jit_train(cfg, mesh).lower(state, batch, rng, _sds(steps.step_constants(cfg)))


def lower_test(config, platform: str, mesh, global_batch: int):
    from ppsn.test_mode import score_fn
    from ppsn.train import initialize

    config, dtype = for_platform(config, platform)
    model = initialize.build_model(config, dtype)
    spec = datasets.clip_spec(config.data, "test")
    views = backend.views_per_call(config.data.test_views_per_chunk, platform)
    variables = jax.eval_shape(lambda: initialize.scratch_variables(model, 0))
    batch = {"frames": jax.ShapeDtypeStruct((global_batch,) + spec.shape, np.uint8)}
    if spec.device_crops:
        batch["hw"] = jax.ShapeDtypeStruct((global_batch, 2), np.int32)
    return score_fn(model, mesh, spec, views).lower(variables, batch)
