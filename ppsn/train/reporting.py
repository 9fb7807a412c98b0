"""What a training run tells its user: the step meter, PaddleVideo-style log lines, TensorBoard."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import logging
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from ppsn import parallel, paths
from ppsn.cli import UserError

LOG_FILE = "train.log"


class NonFiniteLossError(UserError, RuntimeError):
    """Training produced a NaN/Inf loss, parameters or learning rate; the checkpoints on disk
    predate it. The message names what is non-finite."""


@dataclasses.dataclass
class Meter:
    """The step metrics between two log lines (device arrays until fetched) and the time spent
    waiting for data."""

    first_step: int  # steps done before the first pending one
    values: list = dataclasses.field(default_factory=list)
    reader: float = 0.0
    start: float = dataclasses.field(default_factory=time.perf_counter)
    paused: float = 0.0  # time spent in validation and checkpointing since ``start``

    def elapsed(self) -> float:
        """Step time since ``start``: wall time less what :meth:`excluded` left out."""
        return time.perf_counter() - self.start - self.paused

    @contextlib.contextmanager
    def excluded(self):
        """Time spent inside (validation, checkpointing) is not step time."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.paused += time.perf_counter() - t0

    def pack(self, length: int) -> "Interval":
        """The pending metrics as one device array, its copy to the host started (not waited
        on). Padded to ``length`` rows (the log interval) so that packing compiles once."""
        rows = self.values + [self.values[-1]] * (max(length, len(self.values)) - len(self.values))
        array = _stack(rows)
        array.copy_to_host_async()
        return Interval(array, sorted(self.values[0]), len(self.values), self.first_step,
                        self.elapsed(), self.reader)


@jax.jit
def _stack(rows):
    """Step metrics (dicts of scalars) -> one float32 ``[steps, metrics]`` array, keys sorted."""
    return jnp.stack([jnp.stack([jnp.asarray(row[k], jnp.float32) for k in sorted(row)])
                      for row in rows])


@dataclasses.dataclass
class Interval:
    """The metrics of the steps between two log lines, on their way to the host."""

    array: jax.Array
    names: list
    count: int  # real rows (the rest is padding)
    first_step: int
    elapsed: float  # wall seconds of the interval, and of them waiting for data
    reader: float

    @property
    def done(self) -> int:
        return self.first_step + self.count

    def ready(self) -> bool:
        return self.array.is_ready()

    def fetch(self) -> dict:
        """The interval's mean metrics (``lr``: the last step's), after checking that every
        step's metrics are finite."""
        rows = np.asarray(parallel.to_host(self.array))[:self.count]
        for i, row in enumerate(rows):
            message = non_finite_message(dict(zip(self.names, row)), self.first_step + i + 1)
            if message:
                raise NonFiniteLossError(message)
        out = {k: float(np.mean(rows[:, i])) for i, k in enumerate(self.names)}
        out["lr"] = float(rows[-1, self.names.index("lr")])
        return out


class InFlight:
    """Log intervals whose metrics are being copied to the host; ``emit`` hands the arrived ones
    (or, with ``wait``, all) to ``write(interval, metrics)`` in order."""

    def __init__(self):
        self._intervals: collections.deque[Interval] = collections.deque()

    def add(self, interval: Interval) -> None:
        self._intervals.append(interval)

    def emit(self, write, wait: bool = False) -> None:
        while self._intervals and (wait or self._intervals[0].ready()):
            interval = self._intervals.popleft()
            write(interval, interval.fetch())


_WHAT = {"loss": "loss", "param_norm": "parameters (their norm)", "lr": "learning rate"}


def non_finite_message(m: dict, step: int) -> str | None:
    """None if every metric of step ``step`` is finite, else what is not (and what still was),
    e.g. ``non-finite parameters (their norm) nan after step 3; the loss (2.31) was finite``."""
    bad = [k for k, v in m.items() if not np.isfinite(v)]
    if not bad:
        return None
    what = ", ".join(f"{_WHAT.get(k, k)} {float(m[k])}" for k in bad)
    fine = [f"the {_WHAT.get(k, k)} ({float(m[k]):.6g})" for k in ("loss", "lr")
            if k in m and k not in bad]
    return (f"non-finite {what} after step {step}"
            + (f"; {' and '.join(fine)} {'was' if len(fine) == 1 else 'were'} finite" if fine else "")
            + ": stopping; the checkpoints and the best model on disk are from before it "
            "(lower --config.optim.base_lr, or check the data)")


class RunLogs:
    """The handlers of a run's log (:func:`run_logs`). Process 0's lines are held in memory
    until :meth:`open_file` (once the run's pre-flight passed and it holds the workdir), then
    written to ``WORKDIR/train.log`` and appended there: a refused run writes nothing there."""

    def __init__(self, logger, workdir: str, process_index: int, formatter):
        self.logger, self.workdir, self.formatter = logger, workdir, formatter
        self.file: MirroredFileHandler | None = None
        self.held = _Held() if process_index == 0 else None
        console = logging.StreamHandler(sys.stdout)
        console.setLevel(logging.INFO if process_index == 0 else logging.WARNING)
        self.handlers = [console] + ([self.held] if self.held else [])
        for handler in self.handlers:
            handler.setFormatter(formatter)
            logger.addHandler(handler)

    def open_file(self) -> None:
        if self.held is None or self.file is not None:
            return
        self.file = MirroredFileHandler(paths.join(os.fspath(self.workdir), LOG_FILE))
        self.file.setFormatter(self.formatter)
        for record in self.held.records:
            self.file.handle(record)
        self.logger.removeHandler(self.held)
        self.handlers.remove(self.held)
        self.handlers.append(self.file)
        self.logger.addHandler(self.file)

    def close(self) -> None:
        for handler in self.handlers:
            self.logger.removeHandler(handler)
            handler.close()


class _Held(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@contextlib.contextmanager
def run_logs(workdir: str, process_index: int):
    """During a run, ppsn's log goes to stdout and (process 0) is appended to
    ``WORKDIR/train.log`` from :meth:`RunLogs.open_file` on (the lines before it included);
    processes other than 0 print only warnings and errors. An error that ends the run is
    written to ``train.log`` too, if it was opened. Yields the :class:`RunLogs`."""
    logger = logging.getLogger("ppsn")
    logs = RunLogs(logger, workdir, process_index,
                   logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    saved = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False  # not twice on a terminal (absl's handler writes to stderr)
    try:
        yield logs
    except BaseException as e:
        if logs.file is not None:  # the file: the run's record says how it ended
            logs.file.handle(logger.makeRecord(
                logger.name, logging.ERROR, __file__, 0, "stopped: %s: %s",
                (type(e).__name__, e), None))
        raise
    finally:
        logs.close()
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def log_line(epoch, num_epochs, step, m, log_parts, batch_cost, reader_cost, ips, eta) -> str:
    """PaddleVideo's training log line (plus the task's loss parts)."""
    parts = "".join(f"{k}: {m[k]:.5f} " for k in log_parts if k in m)
    return (f"epoch:[{epoch:3d}/{num_epochs:<3d}] train step:{step:<6d} loss: {m['loss']:.5f} "
            f"{parts}top1: {m['top1']:.5f} top5: {m['top5']:.5f} lr: {m['lr']:.6f} "
            f"batch_cost: {batch_cost:.5f} sec, reader_cost: {reader_cost:.5f} sec, "
            f"ips: {ips:.2f} instance/sec. ETA: {eta}")


def eta(step_times: list[float], steps_left: int) -> datetime.timedelta:
    return datetime.timedelta(seconds=int(np.mean(step_times[-20:]) * steps_left))


class MirroredFileHandler(logging.FileHandler):
    """Appends to ``target``: a local file directly; in a bucket (no appends there) a local copy
    seeded with the object's content, pushed every 30 s as lines come and when closed."""

    def __init__(self, target: str):
        self.mirror = paths.Mirror(target, interval=30.0)
        super().__init__(self.mirror.local, mode="a", encoding="utf-8")

    def emit(self, record):
        super().emit(record)
        self.mirror.push()

    def close(self):
        super().close()
        self.mirror.close()


def push_logs() -> None:
    """Copies ``train.log`` to its bucket now (a no-op for a local workdir): called at each
    checkpoint, so a killed run's log reaches its last checkpoint."""
    for handler in logging.getLogger("ppsn").handlers:
        if isinstance(handler, MirroredFileHandler):
            handler.flush()
            handler.mirror.push(now=True)


class Writer:
    """TensorBoard scalars on process 0 (tensorboardX: no TensorFlow needed) in
    ``WORKDIR/tensorboard``; for a bucket written locally and pushed at most once a minute and
    when closed (tensorboardX's own gs:// writer re-uploads the whole file on every flush and
    can hang at exit)."""

    def __init__(self, workdir):
        self._writer = self._mirror = None
        if jax.process_index() == 0:
            from tensorboardX import SummaryWriter

            self._mirror = paths.Mirror(paths.join(os.fspath(workdir), "tensorboard"),
                                        directory=True, interval=60.0)
            # A restart in the same second must not overwrite the earlier run's file.
            self._writer = SummaryWriter(self._mirror.local, filename_suffix=f".{os.getpid()}")

    def scalars(self, prefix, values, step):
        if self._writer:
            for k, v in values.items():
                self._writer.add_scalar(f"{prefix}/{k}", v, step)
            self._writer.flush()
            self._mirror.push()

    def close(self):
        if self._writer:
            self._writer.close()
            self._mirror.close()
