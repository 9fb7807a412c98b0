"""The block plan's parameter and FLOP counts against the Flax model and XLA's cost analysis,
and ``python -m ppsn.benchmark complexity``."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppsn.benchmark.__main__ import main as benchmark_main
from ppsn.benchmark.complexity import xla_forward_flops
from ppsn.models import TSN, complexity, plan


@pytest.mark.parametrize("depth", [18, 50])
def test_params_match_the_flax_model(depth):
    model = TSN(depth=depth, num_classes=7)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 1, 32, 32, 3))))
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
    assert complexity.count(depth, 7, 32, 1, 1)["params"] == params


@pytest.mark.parametrize("depth,size", [(18, 37), (50, 32)])
def test_plan_flops_match_xla_cost_analysis(depth, size):
    """XLA counts multiply-adds on real inputs only (the plan's ``valid_macs``) plus the
    element-wise operations (BatchNorm, ReLU, pools, adds: a few % at most)."""
    layers = complexity.conv_layers(depth, size, size)
    plan_flops = 2 * sum(layer.valid_macs for layer in layers) + 2 * plan.feature_dim(depth) * 7
    xla = xla_forward_flops(depth, 7, size)
    assert 1.0 <= xla / plan_flops < 1.03, (xla, plan_flops)
    # The reported convention counts the padded taps too: more at small sizes.
    counted = complexity.count(depth, 7, size, 1, 1)["test_flops_per_video"]
    assert counted > plan_flops


def test_train_and_test_totals_follow_the_clip_shapes():
    one = complexity.count(50, 400, 224, 1, 1)
    got = complexity.count(50, 400, 224, 3, 250)
    frame, fc = one["forward_flops_per_frame"], 2 * 2048 * 400
    assert got["test_flops_per_video"] == 250 * frame + fc
    first = 2 * complexity.conv_layers(50, 224, 224)[0].macs
    assert got["train_flops_per_clip"] == 3 * (3 * frame - first) + 3 * fc
    assert 4.2e9 < frame / 2 < 4.4e9  # ResNet50-vd: 4.3 G multiply-adds at 224


def test_complexity_command_prints_one_json_line(capsys):
    assert benchmark_main(["complexity", "--config", "configs/pptsn_toy.py"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    out = json.loads(lines[-1])
    assert out["counted_by"].startswith("block plan") and out["depth"] == 18
    assert out == {**out, **complexity.count(18, out["num_classes"], out["size"],
                                             out["num_seg"], out["test_views"])}
    assert benchmark_main(["complexity", "--config", "configs/pptsn_toy.py", "--depth", "19"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --depth: ResNet-vd depth must be one of [18, 34, 50, 101, 152, 200], "
                   "got 19"]
    assert benchmark_main(["complexity", "--config", "configs/missing.py"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
