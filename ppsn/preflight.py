"""Pre-flight: everything a run will need, checked before its first step or first video.

:func:`check` reads and validates, for training (``mode='train'``), test mode (``'test'``) or
export (``'export'``), every config value (finite, in range, consistent), every batch size
against the devices, every list file the run will read (it must exist and parse; past
``data.max_skipped_lines`` of its lines unusable, the run refuses to start), the label list
(ids ``0..num_classes-1``), and every checkpoint (``init_from`` / ``pretrained`` unless the
run resumes, the ``kd`` teacher, the weights to test or export: their recorded depth and class
count against the config). All problems are collected and raised together as one
:class:`ppsn.cli.ConfigError`, so a multi-hour run never fails late on something knowable at
start-up. What it read (sources, label names, weights) is returned for the run to use.

It sits at the entry layer (``ppsn.train_mode``, ``ppsn.test_mode``, ``ppsn.export``) and
gathers each owner's own check: the task's (``distill``, :func:`ppsn.train.tasks.
distill_problems`), the optimizer's (:func:`ppsn.train.optim.schedule_problems`), the data
sources' (:mod:`ppsn.data.source_check`, :func:`ppsn.data.labels.class_names`) and whether a
checkpoint fits the model (:mod:`ppsn.checkpoint_fit`). Nothing below it imports it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ppsn.checks import Problems, finite
from ppsn.cli import ConfigError

MODES = ("train", "test", "export")


@dataclasses.dataclass
class Inputs:
    """What the pre-flight read, for the run to use (nothing is read twice)."""

    train: Any = None  # sources (ListFileSource or TfdsSource)
    valid: Any = None
    test: Any = None
    label_names: list[str] | None = None
    weights: tuple[dict, dict] | None = None  # (variables, meta) for test / export

    def skipped_lines(self) -> dict[str, list]:
        """``{list file: [SkippedLine, ...]}`` of the sources that skipped lines."""
        out = {}
        for source in (self.train, self.valid, self.test):
            skipped = getattr(source, "skipped", None)
            if skipped:
                out[source.list_file] = list(skipped)
        return out


# What marks an earlier output of test mode / export, the only thing --force replaces.
OUTPUT_MARKERS = {"test": ("summary.json", "ppsn test report"),
                  "export": ("inference.json", "ppsn export")}


def check(config, mode: str, devices: int, *, workdir: str | None = None,
          weights: str | None = None, output: str | None = None, force: bool = False
          ) -> Inputs:
    """Check everything a ``mode`` run of ``config`` on ``devices`` devices needs; raises one
    :class:`ConfigError` listing every problem found, else returns what it read. ``output``
    (test mode, export) must be new, or with ``force`` an earlier output of that mode."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    problems = Problems()
    values_ok = _check_values(config, mode, problems)
    _check_batch_sizes(config, mode, devices, problems)
    inputs = Inputs()
    if mode == "train":
        inputs.train = _source(config, "train", problems) if values_ok else None
        if inputs.train is not None and len(inputs.train) < config.batch_size:
            problems.append(f"the training list {_name(inputs.train)} has {len(inputs.train)} "
                            f"usable videos, fewer than one batch (--config.batch_size="
                            f"{config.batch_size})")
        if config.validate and values_ok:
            inputs.valid = _source(config, "valid", problems)
    elif mode == "test" and values_ok:
        inputs.test = _source(config, "test", problems)
    if mode == "test" and config.data.label_list:  # the reports' class names (training has no use)
        from ppsn.data import labels

        inputs.label_names, problem = labels.class_names(config.data.label_list,
                                                         config.model.num_classes)
        problems.need(problem is None, problem)
    if mode == "train" and values_ok:
        _check_init_checkpoints(config, workdir, problems)
    if mode in ("test", "export"):
        inputs.weights = _weights(weights, config, problems)
        if output:
            from ppsn import checkpoint

            marker, kind = OUTPUT_MARKERS[mode]
            try:
                checkpoint.check_replaceable(output, force=force, marker=marker, kind=kind)
            except FileExistsError as e:
                problems.append(str(e))
    if problems:
        raise ConfigError(_summary(problems))
    return inputs


def _name(source) -> str:
    from ppsn.data import source_check

    return source_check.name(source)


def _summary(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return (f"{len(problems)} problems: "
            + "; ".join(f"({i}) {p}" for i, p in enumerate(problems, start=1)))


# ---------------------------------------------------------------------------- config values


def _check_values(config, mode: str, problems: Problems) -> bool:
    """Values that are impossible whatever the data; False if a source cannot be built from
    them (then the lists are not read)."""
    from ppsn.data.lists import FORMATS
    from ppsn.models.plan import STAGE_BLOCKS

    before = len(problems)
    m, d = config.model, config.data
    need = problems.need
    need(m.depth in STAGE_BLOCKS, f"--config.model.depth={m.depth!r}: ResNet-vd depths are "
         f"{', '.join(map(str, STAGE_BLOCKS))}")
    need(isinstance(m.num_classes, int) and m.num_classes >= 1,
         f"--config.model.num_classes={m.num_classes!r}: must be an integer >= 1")
    need(finite(m.dropout_rate) and 0 <= m.dropout_rate < 1,
         f"--config.model.dropout_rate={m.dropout_rate!r}: must be in [0, 1)")
    need(d.source in ("list", "tfds"), f"--config.data.source={d.source!r}: 'list' or 'tfds'")
    need(d.format in FORMATS, f"--config.data.format={d.format!r}: one of {', '.join(FORMATS)}")
    for field in ("num_seg", "test_num_seg", "short_size", "target_size", "test_canvas"):
        value = d[field]
        need(isinstance(value, int) and value >= 1,
             f"--config.data.{field}={value!r}: must be an integer >= 1")
    if isinstance(d.target_size, int) and isinstance(d.short_size, int):
        need(d.target_size <= d.short_size, f"--config.data.target_size={d.target_size} exceeds "
             f"--config.data.short_size={d.short_size}: the crop must fit the scaled frame")
        if mode == "test" and d.test_crops_on_device:
            need(d.test_canvas >= d.short_size, f"--config.data.test_canvas={d.test_canvas} is "
                 f"smaller than --config.data.short_size={d.short_size}: the scaled frames must "
                 "fit the canvas")
    for field in ("num_workers", "worker_buffer_size", "prefetch_batches", "decode_threads",
                  "retain_freed_mb", "read_ahead_mb"):
        need(isinstance(d[field], int) and d[field] >= -1,
             f"--config.data.{field}={d[field]!r}: must be an integer >= 0 (-1: the default)")
    need(d.test_views_per_chunk is None
         or (isinstance(d.test_views_per_chunk, int) and d.test_views_per_chunk >= 0),
         f"--config.data.test_views_per_chunk={d.test_views_per_chunk!r}: must be >= 0 (unset: "
         "per backend)")
    need(str(config.amp).lower() in ("auto", "true", "false"),
         f"--config.amp={config.amp!r}: 'auto', True or False")
    need(finite(d.max_skipped_lines) and 0 <= d.max_skipped_lines <= 1,
         f"--config.data.max_skipped_lines={d.max_skipped_lines!r}: a fraction in [0, 1]")
    _check_choices(config, problems)
    sources_ok = len(problems) == before
    if mode == "train":
        _check_training_values(config, problems)
    return sources_ok


def _check_choices(config, problems: Problems) -> None:
    """The string fields that name one of a few choices (types are ConfigDict's to check)."""
    from ppsn.backend import CONV_IMPLS
    from ppsn.data.loading import HANDOFFS

    for section, field, allowed in (("model", "conv_impl", CONV_IMPLS),
                                    ("data", "handoff", HANDOFFS),
                                    ("data", "test_sampling", ("", "linspace"))):
        value = config[section][field]
        problems.need(value in allowed, f"--config.{section}.{field}={value!r}: one of "
                      f"{', '.join(repr(a) for a in allowed)}")


def _check_training_values(config, problems: Problems) -> None:
    """The schedule's, the loss's, the loop's and the task's (``distill``) values."""
    from ppsn.train import losses, optim, tasks

    problems += optim.schedule_problems(config)
    problems += losses.loss_problems(config.loss)
    need = problems.need
    need(isinstance(config.max_steps, int) and (config.max_steps == -1 or config.max_steps >= 1),
         f"--config.max_steps={config.max_steps!r}: must be an integer >= 1 (-1: the whole "
         "schedule)")
    for field in ("log_interval", "val_interval", "checkpoint_every_steps", "keep_checkpoints"):
        need(isinstance(config[field], int) and config[field] >= 1,
             f"--config.{field}={config[field]!r}: must be an integer >= 1")
    problems += tasks.distill_problems(config)


def _check_batch_sizes(config, mode: str, devices: int, problems: Problems) -> None:
    """Global batch sizes must divide over the devices; ``test_batch_per_device`` is per device."""
    fields = {"train": ["batch_size"] + (["valid_batch_size"] if config.validate else []),
              "test": ["test_batch_per_device"], "export": []}[mode]
    for field in fields:
        value = config[field]
        if not problems.need(isinstance(value, int) and value >= 1,
                             f"--config.{field}={value!r}: must be an integer >= 1"):
            continue
        problems.need(field == "test_batch_per_device" or value % devices == 0,
                      f"--config.{field}={value} does not divide over the {devices} devices: "
                      f"use a multiple of {devices}")


# ------------------------------------------------------------------- sources, checkpoints


def _source(config, mode: str, problems: Problems):
    """The source of ``mode``, or None (with the problem noted) if it cannot be used."""
    from ppsn.data import source_check

    source, problem = source_check.checked_source(config, mode)
    problems.need(problem is None, problem)
    return source


def _check_init_checkpoints(config, workdir: str | None, problems: Problems) -> None:
    """``init_from`` / ``pretrained`` (the first one set; not when the run resumes) and the
    distillation teacher (when the task reads it)."""
    from ppsn import checkpoint, checkpoint_fit
    from ppsn.models.plan import STAGE_BLOCKS
    from ppsn.train import tasks

    resuming = bool(workdir and checkpoint.saved_steps(workdir))
    if resuming:  # the config the checkpoints were made with: only safe changes
        from ppsn import resume_compat

        problems.need(not (message := resume_compat.check(config, workdir)), message)
    if not resuming and config.model.depth in STAGE_BLOCKS:
        for field in ("init_from", "pretrained"):
            if config[field]:
                problems += checkpoint_fit.variables_problems(field, config[field],
                                                              config.model.depth)
                break
    dist = config.distill
    task = tasks.TASKS.get(dist.mode)
    if (task and task.loads_teacher(resuming) and dist.teacher_checkpoint
            and dist.teacher_depth in STAGE_BLOCKS):
        problems += checkpoint_fit.variables_problems(
            "distill.teacher_checkpoint", dist.teacher_checkpoint, dist.teacher_depth,
            config.model.num_classes)


def _weights(path: str | None, config, problems: Problems):
    """The served variables of ``path`` (``checkpoint.load_weights``), checked against the
    config's model: depth, class count, then every shape."""
    from ppsn import checkpoint

    if not path:
        problems.append("--weights is required")
        return None
    try:
        variables, meta = checkpoint.load_weights(path)
    except FileNotFoundError as e:
        problems.append(f"--weights: {e}")
        return None
    problem = weights_mismatch(variables, meta, config)
    if problem:
        problems.append(f"--weights={path}: {problem}")
        return None
    return variables, meta


def weights_mismatch(variables, meta, config) -> str | None:
    """Why ``variables`` (with their checkpoint's ``meta``) cannot run as ``config``'s model,
    or None (:func:`ppsn.checkpoint_fit.misfits`)."""
    from ppsn import checkpoint_fit

    problems = checkpoint_fit.misfits(
        meta.get("path", "the checkpoint"), config.model.depth, config.model.num_classes,
        meta=meta, variables=variables, wants="config", whole=True)
    return problems[0] if problems else None
