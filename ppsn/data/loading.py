"""Loading: batches of a Grain dataset made in worker processes (or in this process), with a
checkpointable iterator.

:class:`Loader` (from ``config.data`` by :func:`loader_settings`, workers planned by
:func:`loading_plan`): batches are made in ``num_workers`` worker processes (or in the main
process), each running ``decode_threads`` library threads; read-ahead is bounded:
``prefetch_batches`` (no workers) or ``num_workers * (prefetch_batches + 2 * worker_buffer_size
+ 2)`` elements (batches, or parts of one; Grain's buffers in and between the workers) beyond
the one being consumed.
Workers hand batches over in place through a shared-memory ring each (:mod:`ppsn.data.handoff`:
a batch's arrays are its slot's memory, reused once nothing refers to them) and keep freed
memory for reuse (:mod:`ppsn.data.host_memory`).

A batch may be made in ``parts`` (the train batch: one part per local device, so a worker
holds a device's rows, not a whole per-process batch): :class:`BatchIterator` takes that many
consecutive elements per ``next`` and gives them as a list, which
:func:`ppsn.parallel.parts_to_global` puts on the devices without joining them on the host.

The iterator's state (:class:`BatchIterator` ``get_state`` / ``set_state``) is the number of
(whole) batches consumed: it restores the exact position with any number of worker processes
or parts.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import weakref
from typing import Iterator

import grain
import numpy as np

from ppsn.data import loading_plan as _plan

log = logging.getLogger(__name__)

MIN_SHM_BYTES = 64 * 2**10
# Batches a consumer may hold while taking the next (the train loop: 2 on the devices ahead, 1
# being put there, 1 in the step), each keeping its worker's ring slot; unused slots cost nothing.
HELD_BATCHES = 6
HANDOFFS = ("ring", "grain")
CPUS_ENV = "PPSN_CPUS"  # CPUs this process may use (the launchers set it per process)


def available_cpus() -> int:
    """CPUs this process may use: ``$PPSN_CPUS`` (set by ``launch/*``: e.g. a SLURM task's
    ``SLURM_CPUS_PER_TASK``), else the process's CPU affinity."""
    value = os.environ.get(CPUS_ENV, "")
    if value:
        try:
            cpus = int(value)
        except ValueError:
            raise ValueError(f"{CPUS_ENV}={value!r} is not a number of CPUs") from None
        if cpus < 1:
            raise ValueError(f"{CPUS_ENV}={value!r}: need at least 1 CPU")
        return cpus
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class Loader:
    """How batches are made: in ``num_workers`` worker processes (0: in this process), each
    with ``decode_threads`` OpenCV / FFmpeg threads and keeping ``worker_buffer_size`` finished
    batches; each producer (the main process without workers, else each worker) computes up to
    ``prefetch_batches`` batches ahead, in as many threads, and keeps up to ``retain_freed_mb``
    MiB of freed memory for reuse (:mod:`ppsn.data.host_memory`; 0: the C library's defaults).
    Workers hand batches over in place through a shared-memory ring each (``handoff='ring'``,
    :mod:`ppsn.data.handoff`) or a new segment per array and batch (``'grain'``)."""

    num_workers: int = 0
    worker_buffer_size: int = 1
    prefetch_batches: int = 2
    decode_threads: int = 1
    retain_freed_mb: int = 0
    handoff: str = "ring"

    def __post_init__(self):
        if self.handoff not in HANDOFFS:
            raise ValueError(f"data.handoff must be one of {HANDOFFS}, got {self.handoff!r}")
        for field in dataclasses.fields(self):
            if field.type == "int" and getattr(self, field.name) < 0:
                raise ValueError(f"data.{field.name} must be >= 0, got {getattr(self, field.name)}")
        if self.num_workers and self.worker_buffer_size < 1:
            raise ValueError("data.worker_buffer_size must be >= 1 with worker processes")

    @property
    def read_ahead(self) -> int:
        """The most elements (batches, or parts) made beyond the one being consumed (Grain's
        buffers: measured)."""
        if self.num_workers == 0:
            return self.prefetch_batches
        return self.num_workers * (self.prefetch_batches + 2 * self.worker_buffer_size + 2)

    def describe(self, batch_bytes: int | None = None, parts: int = 1) -> str:
        """``batch_bytes``: the bytes of one element (a batch, or one of its ``parts``)."""
        where = (f"{self.num_workers} worker processes" if self.num_workers
                 else "the main process")
        unit = f"parts (1/{parts} batch)" if parts > 1 else "batches"
        text = (f"batches made in {where} ({self.decode_threads} decode threads each), "
                f"worker buffer {self.worker_buffer_size}, prefetch {self.prefetch_batches}, "
                f"freed memory kept {self.retain_freed_mb} MiB, handoff {self.handoff}: "
                f"at most {self.read_ahead} {unit} read ahead")
        if batch_bytes:
            text += f" ({self.read_ahead * batch_bytes / 2**30:.2f} GiB)"
        return text


def loading_plan(data_cfg, cpus: int | None = None, *, local_devices: int = 1,
                 accelerator: bool = False, batch_bytes: int = 0,
                 host_memory: int | None = None, host_cpus: int | None = None, parts: int = 1):
    """The workers and read-ahead ``config.data`` gives a process (:mod:`ppsn.data.loading_plan`):
    ``-1`` fields derived from its CPUs (:func:`available_cpus`), its local devices, the bytes
    of one element a worker makes (a batch, or one of its ``parts``; 0: unknown, no byte
    bound) and the host's memory."""
    cpus = cpus or available_cpus()
    buffer = _field(data_cfg, "worker_buffer_size", 1)
    budget = _field(data_cfg, "read_ahead_mb", -1)
    if budget == -1:
        budget = _plan.default_read_ahead_mb(host_memory or _plan.host_memory_bytes(), cpus,
                                             host_cpus or os.cpu_count() or cpus)
    return _plan.plan(
        cpus=cpus, local_devices=local_devices, accelerator=accelerator, batch_bytes=batch_bytes,
        budget_mb=budget, parts=parts, num_workers=int(data_cfg.get("num_workers", -1)),
        batches_per_worker=_field(data_cfg, "prefetch_batches", 0) + 2 * max(1, buffer) + 2,
        main_batches=_field(data_cfg, "prefetch_batches", 2))


def _field(data_cfg, name: str, auto: int) -> int:
    v = int(data_cfg.get(name, -1))
    return auto if v == -1 else v


def loader_settings(data_cfg, cpus: int | None = None, **plan_args) -> Loader:
    """The :class:`Loader` that ``config.data`` asks for; ``-1`` fields are derived here (the
    one place): the workers by :func:`loading_plan` (``plan_args``: the process's devices and
    batch bytes; without them one worker per CPU but one), one library thread per worker, one
    finished batch per worker, 2 batches read ahead without workers (0 inside workers, whose
    buffers already read ahead), and 64 MiB of freed memory kept by each process that makes or
    receives batches."""
    num_workers = loading_plan(data_cfg, cpus, **plan_args).num_workers
    return Loader(num_workers=num_workers,
                  worker_buffer_size=_field(data_cfg, "worker_buffer_size", 1),
                  prefetch_batches=_field(data_cfg, "prefetch_batches", 0 if num_workers else 2),
                  decode_threads=_field(data_cfg, "decode_threads", 1),
                  retain_freed_mb=_field(data_cfg, "retain_freed_mb", 64),
                  handoff=data_cfg.get("handoff", "ring"))


def planned_loader(data_cfg, **plan_args) -> Loader:
    """:func:`loader_settings` for a process's batches (``plan_args`` as for
    :func:`loading_plan`), with the plan logged: a warning if the workers read ahead beyond
    ``data.read_ahead_mb``."""
    plan = loading_plan(data_cfg, **plan_args)
    loader = loader_settings(data_cfg, **plan_args)
    batch_bytes = plan_args.get("batch_bytes", 0)
    log.info("data: %s; workers by need %d, read-ahead bound %.2f GiB (workers limited by %s)",
             loader.describe(batch_bytes, plan.parts), plan.workers_by_need,
             plan.read_ahead_budget_bytes / 2**30, plan.limited_by)
    if plan.read_ahead_bytes > plan.read_ahead_budget_bytes:
        log.warning("data: %d worker processes read ahead %.2f GiB, above data.read_ahead_mb "
                    "(%.2f GiB)", loader.num_workers, plan.read_ahead_bytes / 2**30,
                    plan.read_ahead_budget_bytes / 2**30)
    return loader


def _init_worker(threads: int, retain_freed_mb: int, worker_index: int,
                 worker_count: int) -> None:
    import signal

    from ppsn.data import decode, host_memory

    # A terminal's Ctrl-C reaches the whole process group: the main process stops the run
    # after the step in flight (ppsn.train.preemption) and closes the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    decode.set_threads(threads)
    host_memory.retain_freed(retain_freed_mb)


def _ring_slots(loader: Loader, parts: int = 1) -> int:
    """Slots per worker ring: the elements Grain holds per worker (``read_ahead``) and this
    worker's share of those the consumer holds (``HELD_BATCHES`` batches of ``parts``)."""
    held = -(-HELD_BATCHES * parts // loader.num_workers)
    return loader.read_ahead // loader.num_workers + max(HELD_BATCHES, held)


def _grain_iterator(dataset: grain.MapDataset, loader: Loader,
                    parts: int = 1) -> grain.DatasetIterator:
    if loader.num_workers > 0 and loader.handoff == "ring":
        from ppsn.data import handoff

        dataset = dataset.map(functools.partial(handoff.pack, slots=_ring_slots(loader, parts),
                                                min_bytes=MIN_SHM_BYTES))
    it = dataset.to_iter_dataset(grain.ReadOptions(
        num_threads=loader.prefetch_batches, prefetch_buffer_size=loader.prefetch_batches))
    if loader.num_workers > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        # Arrays below this go to the main process pickled with the batch, not each through a
        # shared-memory segment of its own (created, mapped and unlinked per batch).
        it = grain.experimental.WithOptionsIterDataset(
            it, grain.experimental.DatasetOptions(min_shm_size=MIN_SHM_BYTES))
        it = it.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=loader.num_workers, per_worker_buffer_size=loader.worker_buffer_size),
            worker_init_fn=functools.partial(_init_worker, loader.decode_threads,
                                             loader.retain_freed_mb))
    from ppsn.data import host_memory

    # This process makes the batches, or receives them (Grain's way allocates per batch).
    host_memory.retain_freed(loader.retain_freed_mb)
    return iter(it)


class BatchIterator:
    """Iterator over a dataset of batches whose checkpoint state is the number of batches
    consumed (``get_state`` / ``set_state``, bytes, as Grain's Orbax handler stores them): a
    run resumes at the exact batch whatever its ``num_workers``. Worker processes start at the
    first ``next`` (or ``start_prefetch``) and stop at the end or on ``close``.

    With ``parts > 1`` each batch is ``parts`` consecutive elements of the dataset, given by
    ``next`` as a list (an incomplete batch at the end is dropped); the state still counts
    whole batches."""

    def __init__(self, dataset: grain.MapDataset, loader: Loader, parts: int = 1):
        from ppsn.data import handoff

        if parts < 1:
            raise ValueError(f"a batch needs at least 1 part, got {parts}")
        self._dataset, self._loader, self.parts = dataset, loader, parts
        self._position = 0
        self._it = None
        self._receiver = handoff.Receiver()
        # Segments are unlinked on close, or when the iterator is dropped without one.
        weakref.finalize(self, self._receiver.release_all)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def start_prefetch(self) -> None:
        if self._it is None:
            self._it = _grain_iterator(self._dataset[self._position * self.parts:],
                                       self._loader, self.parts)

    def __next__(self) -> dict[str, np.ndarray] | list[dict[str, np.ndarray]]:
        self.start_prefetch()
        try:
            parts = [next(self._it) for _ in range(self.parts)]
        except StopIteration:
            self.close()
            raise
        self._position += 1
        parts = [self._receiver.unpack(part) for part in parts]
        return parts if self.parts > 1 else parts[0]

    def get_state(self) -> bytes:
        return json.dumps({"batches_consumed": self._position}).encode()

    def set_state(self, state: bytes | str | dict) -> None:
        if not isinstance(state, dict):
            state = json.loads(state)
        if "batches_consumed" in state:
            position = state["batches_consumed"]
        elif set(state) == {"next_index"}:  # Grain's own state of an in-process iterator
            position = state["next_index"]
        else:
            raise ValueError("this checkpoint holds a Grain worker-process iterator state "
                             "(saved by an older ppsn), which cannot be restored: restart the "
                             "run in a new workdir or resume with that version")
        self.close()
        self._position = int(position)

    def close(self) -> None:
        if self._it is not None:
            self._it.close()
            self._it = None
        self._receiver.release_all()


def to_iterator(dataset: grain.MapDataset, loader: Loader | int | None = None,
                parts: int = 1) -> BatchIterator:
    """A checkpointable iterator over ``dataset``'s batches, made as ``loader`` says (an int is
    a number of worker processes with the other settings derived; None: in this process), each
    batch ``parts`` consecutive elements (:class:`BatchIterator`).

    Grain reads absl flags when it starts workers; outside ``absl.app.run`` (tests, notebooks,
    argparse CLIs) they are marked parsed here with their defaults."""
    if loader is None:
        loader = Loader()
    elif isinstance(loader, int):
        loader = Loader(num_workers=loader, prefetch_batches=0 if loader else 2)
    return BatchIterator(dataset, loader, parts)
