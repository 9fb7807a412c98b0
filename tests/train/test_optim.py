import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppsn.models import TSN
from ppsn.recipe import pptsn_config
from ppsn.train import optim


class PaddleCustomWarmupCosineDecay:
    """PaddleVideo's scheduler, stepped once per iteration as its trainer does."""

    def __init__(self, warmup_start_lr, warmup_epochs, cosine_base_lr, max_epoch, num_iters):
        self.start, self.warm, self.base, self.max, self.iters = (
            warmup_start_lr, warmup_epochs, cosine_base_lr, max_epoch, num_iters)
        self.last_epoch = 0  # after the constructor's step()

    def step(self):
        self.last_epoch += 1 / self.iters

    def get_lr(self):
        cos = lambda e: self.base * (math.cos(math.pi * e / self.max) + 1.0) * 0.5  # noqa: E731
        if self.last_epoch < self.warm:
            return self.last_epoch * (cos(self.warm) - self.start) / self.warm + self.start
        return cos(self.last_epoch)


def test_schedule_matches_paddlevideo_per_iteration():
    cfg = pptsn_config().optim
    schedule = optim.make_schedule(cfg, num_epochs=100, steps_per_epoch=37)
    paddle = PaddleCustomWarmupCosineDecay(0.005, 10, 0.01, 100, 37)
    for step in range(0, 3700):
        if step % 97 == 0 or step in (369, 370, 371, 3699):
            assert float(schedule(step)) == pytest.approx(paddle.get_lr(), rel=1e-5, abs=1e-9), step
        paddle.step()


def test_schedule_pinned_values():
    cfg = pptsn_config().optim
    s = optim.make_schedule(cfg, num_epochs=100, steps_per_epoch=100)
    lr_end = 0.01 * (math.cos(math.pi * 10 / 100) + 1) / 2  # 0.0097553
    assert float(s(0)) == pytest.approx(0.005)
    assert float(s(500)) == pytest.approx(0.005 + 0.5 * (lr_end - 0.005))
    assert float(s(1000)) == pytest.approx(lr_end)
    assert float(s(5000)) == pytest.approx(0.005)
    assert float(s(10000)) == pytest.approx(0.0, abs=1e-9)


@pytest.fixture(scope="module")
def params():
    return jax.eval_shape(lambda: TSN(depth=18, num_classes=7).init(
        jax.random.key(0), jnp.zeros((1, 1, 32, 32, 3))))["params"]


def test_weight_decay_mask(params):
    mask = optim.weight_decay_mask(params)
    assert mask["fc"] == {"kernel": True, "bias": False}
    unit = mask["backbone"]["bb_1_0"]["short"]
    assert unit == {"conv": {"kernel": True}, "bn": {"scale": False, "bias": False}}
    flat = jax.tree_util.tree_flatten_with_path(mask)[0]
    decayed = [jax.tree_util.keystr(p) for p, v in flat if v]
    assert all(p.endswith("['kernel']") for p in decayed)
    assert len(decayed) == 1 + sum(1 for p, _ in flat if jax.tree_util.keystr(p).endswith("['conv']['kernel']"))


def test_lr_multipliers(params):
    mult = optim.lr_multipliers(params, 5.0, 10.0)
    assert mult["fc"] == {"kernel": 5.0, "bias": 10.0}
    assert set(jax.tree.leaves(mult["backbone"])) == {1.0}


def test_update_is_paddles_momentum_with_coupled_l2():
    """v = mu v + (g + wd p); p -= lr * mult * ((g + wd p) + mu v) (Nesterov)."""
    cfg = pptsn_config().optim
    params = {"fc": {"kernel": jnp.full((2, 2), 0.5), "bias": jnp.full((2,), 0.25)},
              "backbone": {"bn": {"scale": jnp.ones(2)}}}
    tx = optim.make_optimizer(cfg, params, num_epochs=100, steps_per_epoch=10)
    state = tx.init(params)
    lr = optim.make_schedule(cfg, 100, 10)
    p = jax.tree.map(np.asarray, params)
    v = jax.tree.map(np.zeros_like, p)
    wd = {"fc": {"kernel": 1e-4, "bias": 0.0}, "backbone": {"bn": {"scale": 0.0}}}
    mult = {"fc": {"kernel": 5.0, "bias": 10.0}, "backbone": {"bn": {"scale": 1.0}}}
    for step in range(3):
        g = jax.tree.map(lambda x: np.full_like(x, 0.1 * (step + 1)), p)
        updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
        params = jax.tree.map(lambda a, u: a + u, params, updates)
        d = jax.tree.map(lambda gg, pp, w: gg + w * pp, g, p, wd)
        v = jax.tree.map(lambda vv, dd: 0.9 * vv + dd, v, d)
        p = jax.tree.map(lambda pp, dd, vv, m: pp - float(lr(step)) * m * (dd + 0.9 * vv), p, d, v, mult)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(p)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
