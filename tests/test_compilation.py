"""The persistent compilation cache and the compile counts runs report."""

import re
import subprocess

import jax
import jax.numpy as jnp
import pytest

from ppsn import compilation
from tests.conftest import REPO_ROOT
from tests.train.test_loop import _tiny_flags


def _compilations(log):
    m = re.search(r"XLA compilations: (\d+) compiled, (\d+) loaded from the persistent cache", log)
    assert m, log[-3000:]
    return int(m.group(1)), int(m.group(2))


@pytest.mark.slow
def test_a_run_caches_only_programs_worth_caching_and_a_rerun_loads_them(toy_dir, tmp_path):
    cache = tmp_path / "cache"
    logs, entries = [], []
    for name in ("first", "second"):
        cmd = _tiny_flags(toy_dir, tmp_path / name, num_epochs=1, max_steps=1,
                          checkpoint_every_steps=100, compilation_cache_dir=str(cache))
        done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        logs.append(done.stdout + done.stderr)  # ppsn's log on stdout, JAX's on stderr
        entries.append(sorted(p.name for p in cache.iterdir()))
    first, second = _compilations(logs[0]), _compilations(logs[1])
    # A 1-step run compiles dozens of programs (Orbax's per-array slices among them) and writes
    # only the few slow ones: the train step is one of them.
    assert first[1] == 0 and first[0] > len(entries[0])
    assert 1 <= len(entries[0]) <= 20, entries[0]
    assert any(name.startswith("jit_init") for name in entries[0]), entries[0]
    assert entries[1] == entries[0]  # nothing new written by the rerun...
    assert second == (first[0] - len(entries[0]), len(entries[0]))  # ...and all of it loaded
    # The run's first lines say what it runs on and how.
    head = logs[0][:logs[0].index("training TSN")]
    assert "mesh slice=1 x data=1: 1 x cpu (cpu), 1 process" in head
    assert "compute dtype float32, convolutions matmul; batch 8 = 8 per device" in head


def test_the_default_cache_is_under_the_workdir_and_none_turns_it_off(tmp_path, monkeypatch):
    before = jax.config.jax_compilation_cache_dir
    try:
        monkeypatch.setenv(compilation.ENV, str(tmp_path / "shared"))
        assert compilation.use_persistent_cache("", str(tmp_path)) == str(tmp_path / "shared")
        assert compilation.user_cache_dir() == str(tmp_path / "shared")
        assert compilation.use_persistent_cache("none", str(tmp_path)) is None
        with compilation.CompileCounter() as compiles:  # 'none' wins over JAX's variable
            jax.jit(lambda x: x * 5 - 2)(jnp.arange(7.0)).block_until_ready()
        assert compiles.compiled >= 1 and not (tmp_path / "shared").exists()
        monkeypatch.delenv(compilation.ENV)
        monkeypatch.setattr(compilation, "MIN_COMPILE_SECS", 0.0)  # cache this tiny program too
        path = compilation.use_persistent_cache("", str(tmp_path))
        assert path == str(tmp_path / compilation.CACHE_DIR)
        with compilation.CompileCounter() as compiles:
            jax.jit(lambda x: x * 3 + 1)(jnp.arange(5.0)).block_until_ready()
        assert compiles.compiled >= 1 and any((tmp_path / compilation.CACHE_DIR).iterdir())
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
        jax.config.update("jax_enable_compilation_cache", True)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
        from jax.experimental.compilation_cache import compilation_cache
        compilation_cache.reset_cache()
