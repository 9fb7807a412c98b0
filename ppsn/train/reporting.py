"""What a training run tells its user: the step meter, PaddleVideo-style log lines, TensorBoard."""

from __future__ import annotations

import dataclasses
import datetime
import os
import time

import jax
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

    def fetch(self) -> dict:
        """Fetch the pending metrics, check that they are finite, average them."""
        host = [parallel.to_host(m) for m in self.values]
        for i, m in enumerate(host):
            if not (np.isfinite(m["loss"]) and np.isfinite(m["param_norm"])):
                raise NonFiniteLossError(
                    f"non-finite loss {m['loss']} (parameter norm {m['param_norm']}) at step "
                    f"{self.first_step + i + 1}: stopping; the checkpoints and the best model on "
                    "disk are from before it")
        out = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        out["lr"] = float(host[-1]["lr"])
        return out


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
