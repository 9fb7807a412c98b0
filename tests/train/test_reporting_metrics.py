"""The step metrics of a log interval: one array, one transfer, fetched when it has arrived."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppsn import compilation
from ppsn.train import reporting


def _metrics(step, loss=None):
    return {"loss": jnp.float32(step if loss is None else loss), "top1": jnp.float32(0.5),
            "top5": jnp.float32(1.0), "lr": jnp.float32(0.01 * step),
            "param_norm": jnp.float32(3.0)}


def test_an_interval_is_one_array_packed_by_one_compiled_program():
    with compilation.CompileCounter() as compiles:
        intervals = []
        for count in (5, 3, 5):  # a full interval, a shorter one (epoch end), a full one
            meter = reporting.Meter(first_step=10)
            meter.values = [_metrics(s) for s in range(1, count + 1)]
            before = compiles.total
            intervals.append(meter.pack(length=5))
            if len(intervals) > 1:
                assert compiles.total == before  # packing compiled once, whatever the count
    for interval in intervals:
        assert isinstance(interval.array, jax.Array) and interval.array.shape == (5, 5)
    m = intervals[1].fetch()
    assert m["loss"] == pytest.approx(2.0)  # the mean over the 3 real steps, not the padding
    assert m["lr"] == pytest.approx(0.03)  # the last step's
    assert intervals[1].done == 13


def test_a_non_finite_loss_names_its_step():
    meter = reporting.Meter(first_step=100)
    meter.values = [_metrics(1), _metrics(2, loss=np.nan), _metrics(3)]
    with pytest.raises(reporting.NonFiniteLossError, match="non-finite loss nan after step 102; "):
        meter.pack(length=4).fetch()


def test_lines_are_written_when_their_metrics_arrive_without_waiting():
    @jax.jit
    def slow(x):  # about a second of work on a CPU core
        return jax.lax.fori_loop(0, 2000, lambda i, y: jnp.tanh(y @ y), x)[0, 0]

    slow(jnp.eye(256))  # compiled before timing matters, and so is packing:
    reporting.Meter(first_step=0, values=[_metrics(1)]).pack(length=2).fetch()
    in_flight = reporting.InFlight()
    meter = reporting.Meter(first_step=0)
    busy = slow(jnp.eye(256) * 0.5)  # dispatched, still running
    meter.values = [{**_metrics(1), "loss": busy}]
    in_flight.add(meter.pack(length=2))
    written = []
    in_flight.emit(lambda interval, m: written.append(m))
    assert written == []  # not arrived yet: nothing waited for
    in_flight.emit(lambda interval, m: written.append(m), wait=True)
    assert len(written) == 1 and np.isfinite(written[0]["loss"])
