"""XLA compilations: JAX's persistent compilation cache, and counting what a run compiles.

``use_persistent_cache(config.compilation_cache_dir, workdir)`` turns the cache on (``''``:
``$JAX_COMPILATION_CACHE_DIR`` if set, e.g. one cache shared by a cluster's runs, else
``WORKDIR/compilation_cache``; ``'none'``: off): a restarted or repeated run loads its compiled
programs from there instead of compiling them again (on a pod, minutes per restart). Only
programs worth caching are written, with JAX's default thresholds stated here: those that took
at least ``MIN_COMPILE_SECS`` to compile (the train step, the initialization), not the many
small ones (Orbax's ``jit_slice`` per array on save, reshapes) that compile in milliseconds and
would each be one more object every process of a ``gs://`` workdir reads at start-up.

``CompileCounter`` counts backend compilations from ``jax.monitoring`` events while it is open:
``compiled`` (real compilations) and ``cache_hits`` (loaded from the persistent cache). Runs
log them at the end; the tests use them to check that a function compiles once per run.
"""

from __future__ import annotations

import logging
import os

import jax
from jax import monitoring

log = logging.getLogger(__name__)

CACHE_DIR = "compilation_cache"
ENV = "JAX_COMPILATION_CACHE_DIR"  # JAX's own variable
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"  # compiles and cache loads
_CACHE_HIT = "/jax/compilation_cache/cache_hits"
MIN_COMPILE_SECS = 1.0  # JAX's default: a program that compiles faster is compiled again
MIN_ENTRY_BYTES = 0  # JAX's default: no size threshold


def user_cache_dir() -> str:
    """The cache of runs without a workdir (test mode): ``$JAX_COMPILATION_CACHE_DIR`` if set,
    else ``$XDG_CACHE_HOME/ppsn/compilation_cache`` (``~/.cache/...``), never inside an output
    that is replaced as a whole."""
    if os.environ.get(ENV):
        return os.environ[ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ppsn", CACHE_DIR)


def topology_dir(path: str) -> str:
    """``path`` for one process, ``path/processes<P>x<D>`` for P processes of D devices each.

    JAX's cache key does not tell a program of 1 process x 4 devices from the same program of
    2 x 2 (same HLO, same device ids): a run resumed on another topology loaded the other's
    executable, its collectives never met, and the processes hung (seen resuming 1 x 4 as 2 x 2,
    ``tests/train/test_topology.py``). Each multi-process topology gets a folder of its own."""
    if jax.process_count() == 1:
        return path
    return os.path.join(path, f"processes{jax.process_count()}x{jax.local_device_count()}")


def use_persistent_cache(value: str, workdir: str) -> str | None:
    """Points JAX's persistent compilation cache at ``value`` (``''``: ``$JAX_COMPILATION_CACHE_DIR``
    if set, else ``WORKDIR/compilation_cache``); returns the directory, or ``None`` when
    ``value`` is ``'none'``."""
    from jax.experimental.compilation_cache import compilation_cache

    if value.lower() == "none":  # off, even where JAX's own variable turned it on
        jax.config.update("jax_enable_compilation_cache", False)
        compilation_cache.reset_cache()
        return None
    path = topology_dir(value or os.environ.get(ENV) or os.path.join(workdir, CACHE_DIR))
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", MIN_ENTRY_BYTES)
    compilation_cache.reset_cache()  # a process that already compiled reads the new directory
    log.info("persistent compilation cache: %s", path)
    return path


class CompileCounter:
    """Counts backend compilations while open (a context manager, or ``open()`` / ``close()``)."""

    def __init__(self):
        self.total = 0  # backend compile requests: real compilations + persistent-cache loads
        self.cache_hits = 0
        self.names: list[str] = []

    @property
    def compiled(self) -> int:
        return self.total - self.cache_hits

    def _on_duration(self, event, duration, **kwargs):
        if event == _BACKEND_COMPILE:
            self.total += 1
            self.names.append(str(kwargs.get("fun_name", "?")))

    def _on_event(self, event, **kwargs):
        if event == _CACHE_HIT:
            self.cache_hits += 1

    def open(self) -> "CompileCounter":
        monitoring.register_event_duration_secs_listener(self._on_duration)
        monitoring.register_event_listener(self._on_event)
        return self

    def close(self) -> None:
        monitoring.unregister_event_duration_listener(self._on_duration)
        monitoring.unregister_event_listener(self._on_event)

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def summary(self) -> str:
        return (f"XLA compilations: {self.compiled} compiled, {self.cache_hits} loaded from the "
                f"persistent cache")
