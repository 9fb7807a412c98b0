"""Initial model variables: from scratch, from an ImageNet backbone, or from a full model."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ppsn import checkpoint, checkpoint_fit, paths
from ppsn.cli import ConfigError
from ppsn.models import TSN, tsn

log = logging.getLogger(__name__)


def build_model(config, dtype=None) -> TSN:
    """The TSN of ``config.model`` in the run's compute dtype (``config.amp``) with the
    convolutions ``config.model.conv_impl`` resolves to on this backend (:mod:`ppsn.backend`)."""
    return tsn.from_config(config, dtype)


def scratch_variables(model: TSN, seed: int, size: int = 32):
    x = jnp.zeros((1, 1, size, size, 3), jnp.float32)
    return jax.jit(model.init)(jax.random.PRNGKey(seed), x)


def merge_loaded(initial, loaded, source: str):
    """Put ``loaded`` variables over ``initial`` ones, strictly for the backbone.

    The backbone must match exactly (same names and shapes; any difference is an error listing
    them). A head that is absent (ImageNet backbones) or of another class count (fine-tuning on
    another dataset) keeps its fresh initialization, with a log line saying so."""
    init_flat = traverse_util.flatten_dict(jax.tree.map(np.asarray, initial))
    load_flat = traverse_util.flatten_dict(loaded)
    head = {p for p in init_flat if p[1] == "fc"}
    loaded_head = {p for p in load_flat if p[1] == "fc"}
    body_init = set(init_flat) - head
    body_loaded = set(load_flat) - loaded_head
    problems = [f"missing {'/'.join(p)}" for p in sorted(body_init - body_loaded)]
    problems += [f"unexpected {'/'.join(p)}" for p in sorted(body_loaded - body_init)]
    problems += [f"{'/'.join(p)}: {load_flat[p].shape} vs model {init_flat[p].shape}"
                 for p in sorted(body_init & body_loaded) if load_flat[p].shape != init_flat[p].shape]
    if problems:
        model = checkpoint_fit.held_model(initial)[0]
        diagnosis = (checkpoint_fit.misfits(source, model, variables=loaded, wants="model")
                     or [f"{source} does not fit the model's backbone ({len(problems)} "
                         "differences)"])[0]
        shown = problems[:8] + ([f"... ({len(problems) - 8} more)"] if len(problems) > 8 else [])
        raise ConfigError(f"{diagnosis}:\n  " + "\n  ".join(shown))
    merged = dict(init_flat)
    for p in body_init:
        merged[p] = np.asarray(load_flat[p], np.float32)
    head_fits = loaded_head == head and all(load_flat[p].shape == init_flat[p].shape for p in head)
    if head_fits:
        for p in head:
            merged[p] = np.asarray(load_flat[p], np.float32)
        log.info("initialized the whole model from %s", source)
    elif loaded_head:
        log.info("initialized the backbone from %s; its head (%s classes) does not fit and was "
                 "re-initialized", source, load_flat[("params", "fc", "bias")].shape[0])
    else:
        log.info("initialized the backbone from %s (it has no head)", source)
    return traverse_util.unflatten_dict(merged)


def initial_variables(config, model: TSN):
    """Variables to start a new run with: ``init_from`` (full model), else ``pretrained``
    (backbone), else random. A path that is set but missing is an error, never a silent
    fallback to random weights."""
    fresh = scratch_variables(model, config.seed)
    for field in ("init_from", "pretrained"):
        path = getattr(config, field)
        if not path:
            continue
        if not paths.exists(path):
            raise FileNotFoundError(
                f"--config.{field}={path} does not exist. Convert a PaddleVideo/PaddleClas file "
                f"with: python -m ppsn.convert.paddle --pdparams FILE --depth "
                f"{config.model.depth} --output {path}   (or set --config.{field}='')")
        loaded, _ = checkpoint.load_variables(path)
        return merge_loaded(fresh, loaded, path)
    log.info("initialized the model from scratch (seed %d)", config.seed)
    return jax.tree.map(np.asarray, fresh)
