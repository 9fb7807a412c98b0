"""Grain pipelines for train / valid / test, and their sources and clip specs from a config.

Sources (``make_source``) are PaddleVideo list files (:mod:`ppsn.data.lists`) or prepared TFDS
splits (:mod:`ppsn.data.tfds`), both yielding the records of :mod:`ppsn.data.lists`.

Every batch is a dict of numpy arrays:

* ``frames``  uint8 ``[B, T, H, W, 3]`` (T = num_seg, or num_seg * 10 for TenCrop);
* ``label``   int32 ``[B]``;
* ``index``   int32 ``[B]``: the record's position in the source (-1 for padding);
* ``mask``    bool ``[B]``: False for padding and for eval samples that failed to decode;
* ``hw``      int32 ``[B, 2]`` (test with ``device_crops``): the scaled frames' height and width
  on their canvas;
* ``replaced`` int32 ``[B]`` (train): how many bad samples were replaced to produce this one;
* ``video_id`` str ``[B]`` (valid / test): the record's ``video_id`` ('' for padding).
* ``skipped`` uint8 ``[B, SKIP_INFO_BYTES]`` (train): which records those were and why (read
  with :func:`consumed_skips`).

Train: the whole source is shuffled per epoch from ``seed`` (Grain's ``shuffle().repeat()``
reshuffles each epoch), each element's randomness (sampling, crop, flip) comes from an rng
derived from ``seed`` and its position in the global stream, and process ``p`` of ``P`` takes
positions ``p, p + P, ...``: no overlap, and the global stream does not depend on ``P``. A bad
sample is replaced by the next record of the source (deterministically) and counted in
``replaced``; the consumer logs it (:func:`log_consumed_skips`), so the skip log holds the
samples the run consumed, never the read-ahead. The iterator's state (``get_state`` /
``set_state``) is the number of batches consumed: it restores the exact position with any
number of worker processes.

Loading (:class:`Loader`, from ``config.data`` by :func:`loader_settings`): batches are made in
``num_workers`` worker processes (or in the main process), each running ``decode_threads``
library threads; read-ahead is bounded: ``prefetch_batches`` (no workers) or
``num_workers * (prefetch_batches + 2 * worker_buffer_size + 2)`` batches (Grain's buffers in
and between the workers) beyond the one being consumed. Workers hand batches over in place
through a shared-memory ring each (:mod:`ppsn.data.handoff`: a batch's arrays are its slot's
memory, reused once nothing refers to them) and keep freed memory for reuse
(:mod:`ppsn.data.host_memory`).

Eval (valid / test): no shuffle, nothing dropped or duplicated. The source is padded to a
multiple of ``batch_size * P`` so that every process runs the same number of steps; padding and
samples that cannot be decoded carry ``mask=False`` (the latter are logged and counted).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import weakref
from collections import Counter
from typing import Any, Iterator, Sequence

import grain
import numpy as np

from ppsn import paths
from ppsn.data.clips import ClipSpec, load_canvas_clip, load_clip, record_name
from ppsn.data import loading_plan as _plan
from ppsn.data.decode import DecodeError
from ppsn.data.lists import ListFileSource

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_BAD = 20
SKIP_INFO_BYTES = 1024  # per train example: JSON of the records it replaced (truncated beyond)
_SPLIT_FIELDS = {"train": ("train_list", "train_split"), "valid": ("val_list", "val_split"),
                 "test": ("test_list", "test_split")}


def make_source(data_cfg, mode: str, num_classes: int):
    """The source of ``mode`` ('train', 'valid' or 'test') that the config's ``data`` names."""
    list_field, split_field = _SPLIT_FIELDS[mode]
    if data_cfg.source == "list":
        return ListFileSource(getattr(data_cfg, list_field), data_cfg.format,
                              data_cfg.data_prefix, num_classes)
    if data_cfg.source == "tfds":
        from ppsn.data.tfds import TfdsSource

        source = TfdsSource(data_cfg.tfds_name, getattr(data_cfg, split_field),
                            data_cfg.tfds_data_dir, data_cfg.format)
        if source.num_classes != num_classes:
            raise ValueError(f"{source!r} has {source.num_classes} classes, the model "
                             f"{num_classes}: set --config.model.num_classes")
        return source
    raise ValueError(f"data.source must be 'list' or 'tfds', got {data_cfg.source!r}")


def clip_spec(data_cfg, mode: str) -> ClipSpec:
    """How ``mode``'s clips are made, from the config's ``data`` section."""
    test = mode == "test"
    return ClipSpec(mode=mode, num_seg=data_cfg.test_num_seg if test else data_cfg.num_seg,
                    short_size=data_cfg.short_size, target_size=data_cfg.target_size,
                    sampling=(data_cfg.test_sampling or None) if test else None,
                    device_crops=test and data_cfg.test_crops_on_device,
                    canvas=data_cfg.test_canvas)


def _process_info(process_index, process_count):
    if process_index is None or process_count is None:
        import jax

        return jax.process_index(), jax.process_count()
    return process_index, process_count


def _note_bad(skip_log: str | None, record, error: DecodeError, mode: str):
    log.warning("bad sample (%s): %s: %s", mode, error.path, error.reason)
    if skip_log:
        line = json.dumps({"mode": mode, "index": int(record.get("index", -1)),
                           "video_id": str(record.get("video_id", "")), "file": error.path,
                           "reason": error.reason})
        with open(skip_log, "a", encoding="utf-8") as f:  # one short O_APPEND write: atomic
            f.write(line + "\n")


def _encode_skips(skips: list[list]) -> np.ndarray:
    """``[[index, video_id, file, reason], ...]`` -> uint8 ``[SKIP_INFO_BYTES]`` (JSON, zero
    padded); entries that do not fit are dropped (their count stays in ``replaced``)."""
    out = np.zeros(SKIP_INFO_BYTES, np.uint8)
    for keep in range(len(skips), -1, -1):
        data = json.dumps(skips[:keep]).encode()
        if len(data) <= SKIP_INFO_BYTES:
            out[:len(data)] = np.frombuffer(data, np.uint8)
            return out
    return out


class TrainLoader:
    """``random_map`` callable: record + rng -> example, replacing bad samples (which ones and
    why travel with the example, for the consumer to log)."""

    def __init__(self, source, spec: ClipSpec):
        self.source, self.spec = source, spec

    def __call__(self, record, rng: np.random.Generator) -> dict[str, Any]:
        n = len(self.source)
        skips = []
        for attempt in range(MAX_CONSECUTIVE_BAD):
            try:
                frames = load_clip(record, self.spec, rng)
            except DecodeError as e:
                skips.append([int(record["index"]), str(record.get("video_id", "")), e.path,
                              e.reason])
                record = self.source[(record["index"] + 1) % n]
                continue
            return {"frames": frames, "label": np.int32(record["label"]),
                    "index": np.int32(record["index"]), "mask": np.bool_(True),
                    "replaced": np.int32(attempt), "skipped": _encode_skips(skips)}
        raise RuntimeError(f"{MAX_CONSECUTIVE_BAD} consecutive bad samples ending at "
                           f"{record_name(record)} (last: {skips[-1][3]}): the dataset looks "
                           "broken")


def consumed_skips(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The bad samples replaced to make a train batch: one dict per replaced record (``row``,
    ``index``, ``video_id``, ``file``, ``reason``); details beyond ``SKIP_INFO_BYTES`` per example
    come back as ``file='?'``."""
    out = []
    for row in np.nonzero(batch["replaced"] > 0)[0]:
        raw = batch["skipped"][row].tobytes().rstrip(b"\0")
        entries = json.loads(raw) if raw else []
        for k in range(int(batch["replaced"][row])):
            index, video_id, path, reason = entries[k] if k < len(entries) else (
                -1, "", "?", "details truncated")
            out.append({"row": int(row), "index": index, "video_id": video_id, "file": path,
                        "reason": reason})
    return out


def log_consumed_skips(batch: dict[str, np.ndarray], skip_log: str | None,
                       step: int | None = None) -> int:
    """Log (warning and one skip-log line each) the bad samples replaced in a train batch the
    run consumed; returns how many. ``step`` lets :func:`read_skip_log` count a step that a
    resumed run consumed again once."""
    entries = consumed_skips(batch)
    lines = []
    for e in entries:
        log.warning("bad sample (train): %s: %s", e["file"], e["reason"])
        lines.append(json.dumps({"mode": "train", "step": step, **e}))
    if skip_log and lines:
        with open(skip_log, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return len(entries)


class EvalLoader:
    """``map`` callable over padded positions: position -> example (mask False for padding)."""

    def __init__(self, source, spec: ClipSpec, skip_log: str | None = None):
        self.source, self.spec, self.skip_log = source, spec, skip_log

    def _example(self, frames, hw, index, label, mask, failed, video_id=""):
        example = {"frames": frames, "label": np.int32(label), "index": np.int32(index),
                   "mask": np.bool_(mask), "failed": np.bool_(failed),
                   "video_id": np.str_(video_id)}
        if self.spec.device_crops and self.spec.mode == "test":
            example["hw"] = hw
        return example

    def _empty(self, index: int, label: int, failed: bool, video_id: str = ""):
        hw = np.array([self.spec.short_size, self.spec.short_size], np.int32)
        return self._example(np.zeros(self.spec.shape, np.uint8), hw, index, label, False, failed,
                             video_id)

    def __call__(self, position: int) -> dict[str, Any]:
        if position >= len(self.source):
            return self._empty(-1, -1, False)
        record = self.source[position]
        try:
            if self.spec.device_crops and self.spec.mode == "test":
                frames, hw = load_canvas_clip(record, self.spec)
            else:
                frames, hw = load_clip(record, self.spec), None
        except DecodeError as e:
            _note_bad(self.skip_log, record, e, self.spec.mode)
            return self._empty(record["index"], record["label"], True, record["video_id"])
        return self._example(frames, hw, record["index"], record["label"], True, False,
                             record["video_id"])


def train_dataset(source, spec: ClipSpec, batch_size: int, seed: int, *,
                  num_epochs: int | None = None, process_index: int | None = None,
                  process_count: int | None = None) -> grain.MapDataset:
    """This process's batches of the training stream (``batch_size`` is per process)."""
    if spec.mode != "train":
        raise ValueError(f"train_dataset needs a train ClipSpec, got mode {spec.mode!r}")
    if len(source) == 0:
        raise ValueError(f"{source!r} is empty")
    p, num_p = _process_info(process_index, process_count)
    ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(num_epochs)
    ds = ds.random_map(TrainLoader(source, spec), seed=seed)
    ds = ds[p::num_p]
    return ds.batch(batch_size, drop_remainder=True)


def eval_dataset(source, spec: ClipSpec, batch_size: int, *,
                 process_index: int | None = None, process_count: int | None = None,
                 skip_log: str | None = None) -> grain.MapDataset:
    """This process's padded eval batches; every process gets the same number of batches."""
    p, num_p = _process_info(process_index, process_count)
    per_step = batch_size * num_p
    total = max(1, math.ceil(len(source) / per_step)) * per_step
    ds = grain.MapDataset.range(total)[p::num_p]
    return ds.map(EvalLoader(source, spec, skip_log)).batch(batch_size)


# ------------------------------------------------------------------------------------ loading

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
        """The most batches made beyond the one being consumed (Grain's buffers: measured)."""
        if self.num_workers == 0:
            return self.prefetch_batches
        return self.num_workers * (self.prefetch_batches + 2 * self.worker_buffer_size + 2)

    def describe(self, batch_bytes: int | None = None) -> str:
        where = (f"{self.num_workers} worker processes" if self.num_workers
                 else "the main process")
        text = (f"batches made in {where} ({self.decode_threads} decode threads each), "
                f"worker buffer {self.worker_buffer_size}, prefetch {self.prefetch_batches}, "
                f"freed memory kept {self.retain_freed_mb} MiB, handoff {self.handoff}: "
                f"at most {self.read_ahead} batches read ahead")
        if batch_bytes:
            text += f" ({self.read_ahead * batch_bytes / 2**30:.2f} GiB)"
        return text


def loading_plan(data_cfg, cpus: int | None = None, *, local_devices: int = 1,
                 accelerator: bool = False, batch_bytes: int = 0,
                 host_memory: int | None = None, host_cpus: int | None = None):
    """The workers and read-ahead ``config.data`` gives a process (:mod:`ppsn.data.loading_plan`):
    ``-1`` fields derived from its CPUs (:func:`available_cpus`), its local devices, the bytes
    of one of its batches (0: unknown, no byte bound) and the host's memory."""
    cpus = cpus or available_cpus()
    buffer = _field(data_cfg, "worker_buffer_size", 1)
    budget = _field(data_cfg, "read_ahead_mb", -1)
    if budget == -1:
        budget = _plan.default_read_ahead_mb(host_memory or _plan.host_memory_bytes(), cpus,
                                             host_cpus or os.cpu_count() or cpus)
    return _plan.plan(
        cpus=cpus, local_devices=local_devices, accelerator=accelerator, batch_bytes=batch_bytes,
        budget_mb=budget, num_workers=int(data_cfg.get("num_workers", -1)),
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


def _init_worker(threads: int, retain_freed_mb: int, worker_index: int,
                 worker_count: int) -> None:
    import signal

    from ppsn.data import decode, host_memory

    # A terminal's Ctrl-C reaches the whole process group: the main process stops the run
    # after the step in flight (ppsn.train.preemption) and closes the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    decode.set_threads(threads)
    host_memory.retain_freed(retain_freed_mb)


def _ring_slots(loader: Loader) -> int:
    """Slots per worker ring: the batches Grain holds per worker (``read_ahead``) and those
    the consumer holds."""
    return loader.read_ahead // loader.num_workers + HELD_BATCHES


def _grain_iterator(dataset: grain.MapDataset, loader: Loader) -> grain.DatasetIterator:
    if loader.num_workers > 0 and loader.handoff == "ring":
        from ppsn.data import handoff

        dataset = dataset.map(functools.partial(handoff.pack, slots=_ring_slots(loader),
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
    first ``next`` (or ``start_prefetch``) and stop at the end or on ``close``."""

    def __init__(self, dataset: grain.MapDataset, loader: Loader):
        from ppsn.data import handoff

        self._dataset, self._loader = dataset, loader
        self._position = 0
        self._it = None
        self._receiver = handoff.Receiver()
        # Segments are unlinked on close, or when the iterator is dropped without one.
        weakref.finalize(self, self._receiver.release_all)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def start_prefetch(self) -> None:
        if self._it is None:
            self._it = _grain_iterator(self._dataset[self._position:], self._loader)

    def __next__(self) -> dict[str, np.ndarray]:
        self.start_prefetch()
        try:
            batch = next(self._it)
        except StopIteration:
            self.close()
            raise
        self._position += 1
        return self._receiver.unpack(batch)

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


def to_iterator(dataset: grain.MapDataset, loader: Loader | int | None = None) -> BatchIterator:
    """A checkpointable iterator over ``dataset``'s batches, made as ``loader`` says (an int is
    a number of worker processes with the other settings derived; None: in this process).

    Grain reads absl flags when it starts workers; outside ``absl.app.run`` (tests, notebooks,
    argparse CLIs) they are marked parsed here with their defaults."""
    if loader is None:
        loader = Loader()
    elif isinstance(loader, int):
        loader = Loader(num_workers=loader, prefetch_batches=0 if loader else 2)
    return BatchIterator(dataset, loader)


def read_skip_log(path: str) -> list[dict[str, Any]]:
    """The bad samples a run logged (one dict per occurrence; a train step that a resumed run
    consumed again counts once)."""
    if not path or not paths.exists(path):
        return []
    entries, seen = [], set()
    with paths.path(path).open() as f:
        for line in f:
            if not line.strip():
                continue
            entry = json.loads(line)
            if entry.get("step") is not None:
                key = (entry["step"], entry.get("row"), entry.get("index"), entry.get("file"))
                if key in seen:
                    continue
                seen.add(key)
            entries.append(entry)
    return entries


def summarize_skips(entries: Sequence[dict[str, Any]]) -> str:
    """One paragraph: how many bad samples, and the most common reasons with an example file."""
    if not entries:
        return "no bad samples"
    by_reason = Counter(e["reason"] for e in entries)
    example = {e["reason"]: e["file"] for e in entries}
    files = len({e["file"] for e in entries})
    lines = [f"{len(entries)} bad samples ({files} distinct files):"]
    for reason, count in by_reason.most_common(10):
        lines.append(f"  {count} x {reason} (e.g. {example[reason]})")
    return "\n".join(lines)
