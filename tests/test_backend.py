"""Per-backend choices, made in one place (ppsn.backend), with the config's override."""

import jax.numpy as jnp
import pytest

from ppsn import backend
from ppsn.cli import ConfigError
from ppsn.recipe import pptsn_config
from ppsn.train import initialize


@pytest.mark.parametrize("platform,conv,dtype,views", [
    ("cpu", "matmul", jnp.float32, 10), ("gpu", "xla", jnp.bfloat16, 0),
    ("tpu", "xla", jnp.bfloat16, 0)])
def test_auto_resolves_per_backend(platform, conv, dtype, views):
    assert backend.conv_impl("auto", platform) == conv
    assert backend.compute_dtype("auto", platform) == dtype
    assert backend.views_per_call(None, platform) == views


@pytest.mark.parametrize("platform", ["cpu", "gpu", "tpu"])
def test_the_config_forces_a_choice_on_every_backend(platform):
    for impl in ("matmul", "im2col", "xla"):
        assert backend.conv_impl(impl, platform) == impl
    # --config.amp=True on a command line gives the string 'True'
    for amp, dtype in ((True, jnp.bfloat16), ("True", jnp.bfloat16), ("true", jnp.bfloat16),
                       (False, jnp.float32), ("False", jnp.float32)):
        assert backend.compute_dtype(amp, platform) == dtype
    assert backend.views_per_call(0, platform) == 0 and backend.views_per_call(25, platform) == 25


def test_bad_values_are_clear_errors():
    with pytest.raises(ConfigError, match="--config.model.conv_impl='winograd': one of auto"):
        backend.conv_impl("winograd")
    with pytest.raises(ConfigError, match="--config.amp='maybe': 'auto', True or False"):
        backend.compute_dtype("maybe")


def test_the_recipe_defaults_to_auto_and_the_model_gets_the_resolved_choice():
    config = pptsn_config()
    assert config.amp == "auto" and config.model.conv_impl == "auto"
    assert config.data.test_views_per_chunk is None
    config.model.depth = 18
    model = initialize.build_model(config)  # this machine is a CPU
    assert (model.conv_impl, model.dtype) == ("matmul", jnp.float32)
    config.model.conv_impl, config.amp = "xla", "True"
    model = initialize.build_model(config)
    assert (model.conv_impl, model.dtype) == ("xla", jnp.bfloat16)
