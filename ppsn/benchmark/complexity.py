"""``complexity``: parameters and FLOPs of the config's model, counted from the block plan
(:mod:`ppsn.models.complexity`: 2 x multiply-adds of the convolutions and the fc layer), at the
config's ``data.target_size``: per frame (forward), per training clip (``data.num_seg``
frames, forward + backward) and per TenCrop test video (``data.test_num_seg x 10`` views).
``--xla`` adds XLA's cost analysis of the compiled forward pass of one frame (it also counts
the element-wise operations) as ``xla_forward_flops_per_frame``. No weights are computed.
"""

from __future__ import annotations


def add_parser(sub):
    c = sub.add_parser("complexity", help="parameters and FLOPs of a config's model")
    c.add_argument("--config", required=True, help="a config file (configs/*.py)")
    c.add_argument("--depth", type=int, default=None, help="override model.depth")
    c.add_argument("--xla", action="store_true",
                   help="also count the forward pass with XLA's cost analysis")
    return c


def xla_forward_flops(depth: int, num_classes: int, size: int, frames: int = 1) -> float:
    """XLA's FLOPs of the eval forward pass of ``frames`` frames (XLA convolutions)."""
    import jax
    import jax.numpy as jnp

    from ppsn.models import TSN

    model = TSN(depth=depth, num_classes=num_classes, conv_impl="xla")
    x = jax.ShapeDtypeStruct((1, frames, size, size, 3), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape)))
    compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis["flops"])


def run(args) -> dict:
    from ppsn.benchmark.distill import load_config
    from ppsn.data import datasets
    from ppsn.models import complexity, plan

    config = load_config(args.config)
    depth = args.depth or config.model.depth
    try:
        plan.check_depth(depth)
    except ValueError as e:
        from ppsn import cli

        raise cli.UserError(f"--depth: {e}") from None
    test = datasets.clip_spec(config.data, "test")
    size = config.data.target_size
    out = {"benchmark": "complexity", "config": args.config, "depth": depth,
           "num_classes": config.model.num_classes, "size": size,
           "num_seg": config.data.num_seg, "test_views": test.views,
           "counted_by": "block plan (2 x multiply-adds of convolutions and fc)",
           **complexity.count(depth, config.model.num_classes, size, config.data.num_seg,
                              test.views)}
    if args.xla:
        out["xla_forward_flops_per_frame"] = xla_forward_flops(depth, config.model.num_classes,
                                                               size)
    return out
