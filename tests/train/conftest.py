"""The toy train step set-up that the step, task and distillation tests share.

``toy_step(task, config, variables)`` jits the real train and eval steps of ``task`` over a mesh
of all local devices and puts the train state made from ``variables`` on it, replicated;
``toy_batch()`` is a 4-clip batch of 2 random 32x32 frames per clip (10 classes), its last row
masked out.
"""

import types

import jax
import numpy as np
import pytest

from ppsn import parallel
from ppsn.train import steps


def toy_batch():
    data = np.random.default_rng(0)
    return {"frames": data.integers(0, 256, (4, 2, 32, 32, 3), dtype=np.uint8),
            "label": np.array([1, 2, 3, 4], np.int32), "mask": np.array([1, 1, 1, 0], bool)}


def build_toy_step(task, config, variables, steps_per_epoch=10):
    cfg = steps.step_config(task, config, steps_per_epoch=steps_per_epoch)
    mesh = parallel.make_mesh()
    train, evaluate = steps.jit_steps(cfg, mesh)
    state = jax.device_put(steps.create_state(variables, cfg.tx), parallel.replicated(mesh))
    return types.SimpleNamespace(train=train, evaluate=evaluate, state=state, mesh=mesh,
                                 cfg=cfg, batch=toy_batch())


@pytest.fixture
def toy_step():
    """``build_toy_step`` as a fixture: ``toy_step(task, config, variables)``."""
    return build_toy_step
