"""What a training run tells its user: the step meter, PaddleVideo-style log lines, TensorBoard."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from ppsn import parallel


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss; the checkpoints on disk predate it."""


@dataclasses.dataclass
class Meter:
    """The step metrics between two log lines (device arrays until fetched) and the time spent
    waiting for data."""

    first_step: int  # steps done before the first pending one
    values: list = dataclasses.field(default_factory=list)
    reader: float = 0.0
    start: float = dataclasses.field(default_factory=time.perf_counter)

    def pack(self, length: int) -> "Interval":
        """The pending metrics as one device array, its copy to the host started (not waited
        on). Padded to ``length`` rows (the log interval) so that packing compiles once."""
        rows = self.values + [self.values[-1]] * (max(length, len(self.values)) - len(self.values))
        array = _stack(rows)
        array.copy_to_host_async()
        return Interval(array, sorted(self.values[0]), len(self.values), self.first_step,
                        time.perf_counter() - self.start, self.reader)


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
        step's loss and parameter norm are finite."""
        rows = np.asarray(parallel.to_host(self.array))[:self.count]
        m = {k: rows[:, i] for i, k in enumerate(self.names)}
        bad = ~(np.isfinite(m["loss"]) & np.isfinite(m["param_norm"]))
        if bad.any():
            i = int(np.argmax(bad))
            raise NonFiniteLossError(
                f"non-finite loss {m['loss'][i]} (parameter norm {m['param_norm'][i]}) at step "
                f"{self.first_step + i + 1}: stopping; the checkpoints and the best model on "
                "disk are from before it")
        out = {k: float(np.mean(v)) for k, v in m.items()}
        out["lr"] = float(m["lr"][-1])
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


def log_line(epoch, num_epochs, step, m, log_parts, batch_cost, reader_cost, ips, eta) -> str:
    """PaddleVideo's training log line (plus the task's loss parts)."""
    parts = "".join(f"{k}: {m[k]:.5f} " for k in log_parts if k in m)
    return (f"epoch:[{epoch:3d}/{num_epochs:<3d}] train step:{step:<6d} loss: {m['loss']:.5f} "
            f"{parts}top1: {m['top1']:.5f} top5: {m['top5']:.5f} lr: {m['lr']:.6f} "
            f"batch_cost: {batch_cost:.5f} sec, reader_cost: {reader_cost:.5f} sec, "
            f"ips: {ips:.2f} instance/sec. ETA: {eta}")


def eta(step_times: list[float], steps_left: int) -> datetime.timedelta:
    return datetime.timedelta(seconds=int(np.mean(step_times[-20:]) * steps_left))


class Writer:
    """TensorBoard scalars on process 0 (tensorboardX: no TensorFlow needed)."""

    def __init__(self, workdir):
        self._writer = None
        if jax.process_index() == 0:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def scalars(self, prefix, values, step):
        if self._writer:
            for k, v in values.items():
                self._writer.add_scalar(f"{prefix}/{k}", v, step)
            self._writer.flush()

    def close(self):
        if self._writer:
            self._writer.close()
