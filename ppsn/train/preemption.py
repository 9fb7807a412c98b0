"""Preemption loses nothing: on SIGTERM or SIGINT the step in flight ends, every process agrees
on the step, a checkpoint of it is saved and the run stops with :class:`Stopped` (exit status
143 after SIGTERM, 130 after SIGINT: ``ppsn.cli``); the same command resumes from it.

How the processes agree on the step:

* one process: the signal's flag, checked after each step;
* several, with JAX's preemption service (on by default with ``jax.distributed``): its
  notifier takes SIGTERM and :func:`jax.experimental.multihost_utils.reached_preemption_sync_point`
  names the same step on every process (a SIGINT is passed to it as a SIGTERM of this process);
* several, without it: each step, an any-reduce of the processes' flags
  (``multihost_utils.process_allgather``).

A second SIGINT raises ``KeyboardInterrupt`` at once (nothing saved).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import numpy as np

log = logging.getLogger(__name__)

TERMINATED, INTERRUPTED = 143, 130  # 128 + SIGTERM / SIGINT, as a shell reports them


class Stopped(Exception):
    """The run stopped at a step on a signal, after saving it; ``exit_code``: 143 / 130."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _jax_preemption_service() -> bool:
    """Whether ``jax.distributed`` runs JAX's preemption sync manager (it takes SIGTERM)."""
    import jax
    from jax._src import distributed  # no public accessor for the sync manager

    state = distributed.global_state
    return (jax.process_count() > 1 and state.client is not None
            and state.preemption_sync_manager is not None)


class Watch:
    """Within ``with Watch() as w``: SIGTERM / SIGINT are noted, ``w.should_stop(step)`` (called
    after every step, on every process) says whether all processes stop after ``step``."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._service = False

    def __enter__(self) -> "Watch":
        import jax

        self._multi = jax.process_count() > 1
        self._service = _jax_preemption_service()
        if threading.current_thread() is not threading.main_thread():
            return self  # signals are delivered to the main thread only
        wanted = [signal.SIGINT] + ([] if self._service else [signal.SIGTERM])
        for signum in wanted:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # pressed twice: stop now
        self.signum = self.signum or signum
        log.warning("%s received: stopping after the step in flight, with a checkpoint of it",
                    signal.Signals(signum).name)
        if self._service and signum == signal.SIGINT:
            os.kill(os.getpid(), signal.SIGTERM)  # to JAX's notifier: every process agrees

    def should_stop(self, step: int) -> bool:
        if not self._multi:
            return self.signum is not None
        from jax.experimental import multihost_utils

        if self._service:
            return bool(multihost_utils.reached_preemption_sync_point(step))
        flags = multihost_utils.process_allgather(np.int32(self.signum or 0))
        return bool(np.any(flags))

    @property
    def exit_code(self) -> int:
        """130 after a SIGINT here, else 143 (SIGTERM here or on another process)."""
        return INTERRUPTED if self.signum == signal.SIGINT else TERMINATED
