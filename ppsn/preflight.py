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
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from ppsn import paths
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


class _Problems(list):
    def need(self, ok: bool, message: str) -> bool:
        if not ok:
            self.append(message)
        return ok


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
    problems = _Problems()
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
        inputs.label_names = _label_names(config.data.label_list, config.model.num_classes,
                                          problems)
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


def _summary(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return (f"{len(problems)} problems: "
            + "; ".join(f"({i}) {p}" for i, p in enumerate(problems, start=1)))


def _name(source) -> str:
    return getattr(source, "list_file", None) or repr(source)


# ---------------------------------------------------------------------------- config values


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_values(config, mode: str, problems: _Problems) -> bool:
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
    need(_finite(m.dropout_rate) and 0 <= m.dropout_rate < 1,
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
    need(_finite(d.max_skipped_lines) and 0 <= d.max_skipped_lines <= 1,
         f"--config.data.max_skipped_lines={d.max_skipped_lines!r}: a fraction in [0, 1]")
    _check_choices(config, problems)
    sources_ok = len(problems) == before
    if mode == "train":
        _check_training_values(config, problems)
    return sources_ok


def _check_choices(config, problems: _Problems) -> None:
    """The string fields that name one of a few choices (types are ConfigDict's to check)."""
    from ppsn.backend import CONV_IMPLS
    from ppsn.data.loading import HANDOFFS

    for section, field, allowed in (("model", "conv_impl", CONV_IMPLS),
                                    ("data", "handoff", HANDOFFS),
                                    ("data", "test_sampling", ("", "linspace"))):
        value = config[section][field]
        problems.need(value in allowed, f"--config.{section}.{field}={value!r}: one of "
                      f"{', '.join(repr(a) for a in allowed)}")


def _check_training_values(config, problems: _Problems) -> None:
    from ppsn.train import tasks

    need = problems.need
    o, loss = config.optim, config.loss
    need(isinstance(config.num_epochs, int) and config.num_epochs >= 1,
         f"--config.num_epochs={config.num_epochs!r}: must be an integer >= 1")
    need(_finite(o.base_lr) and o.base_lr > 0,
         f"--config.optim.base_lr={o.base_lr!r}: the learning rate must be finite and > 0")
    need(_finite(o.warmup_start_lr) and o.warmup_start_lr >= 0,
         f"--config.optim.warmup_start_lr={o.warmup_start_lr!r}: must be finite and >= 0")
    need(_finite(o.warmup_epochs) and o.warmup_epochs >= 0,
         f"--config.optim.warmup_epochs={o.warmup_epochs!r}: must be finite and >= 0")
    need(_finite(o.momentum) and 0 <= o.momentum < 1,
         f"--config.optim.momentum={o.momentum!r}: must be in [0, 1)")
    for field in ("weight_decay", "fc_weight_lr_mult", "fc_bias_lr_mult"):
        need(_finite(o[field]) and o[field] >= 0,
             f"--config.optim.{field}={o[field]!r}: must be finite and >= 0")
    need(_finite(loss.label_smoothing) and 0 <= loss.label_smoothing < 1,
         f"--config.loss.label_smoothing={loss.label_smoothing!r}: must be in [0, 1)")
    need(_finite(loss.mixup_alpha) and loss.mixup_alpha >= 0,
         f"--config.loss.mixup_alpha={loss.mixup_alpha!r}: must be finite and >= 0")
    need(isinstance(config.max_steps, int) and (config.max_steps == -1 or config.max_steps >= 1),
         f"--config.max_steps={config.max_steps!r}: must be an integer >= 1 (-1: the whole "
         "schedule)")
    for field in ("log_interval", "val_interval", "checkpoint_every_steps", "keep_checkpoints"):
        need(isinstance(config[field], int) and config[field] >= 1,
             f"--config.{field}={config[field]!r}: must be an integer >= 1")
    try:
        tasks.task_class(config)
    except ValueError as e:
        problems.append(str(e))
    dist = config.distill
    if dist.mode:
        need(_finite(dist.temperature) and dist.temperature > 0,
             f"--config.distill.temperature={dist.temperature!r}: must be finite and > 0")
        need(_finite(dist.weight) and dist.weight >= 0,
             f"--config.distill.weight={dist.weight!r}: must be finite and >= 0")
        from ppsn.models.plan import STAGE_BLOCKS

        need(dist.teacher_depth in STAGE_BLOCKS, f"--config.distill.teacher_depth="
             f"{dist.teacher_depth!r}: ResNet-vd depths are {', '.join(map(str, STAGE_BLOCKS))}")


def _check_batch_sizes(config, mode: str, devices: int, problems: _Problems) -> None:
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


# ------------------------------------------------------------------------------ list files


def _source(config, mode: str, problems: _Problems):
    """The source of ``mode``, or None (with the problem noted) if it cannot be used."""
    from ppsn.data import datasets

    try:
        source = datasets.make_source(config.data, mode, config.model.num_classes)
    except (OSError, ValueError) as e:
        problems.append(f"{mode} data: {e}")
        return None
    skipped = getattr(source, "skipped", [])
    lines = len(source) + len(skipped)
    limit = config.data.max_skipped_lines
    if not problems.need(lines > 0, f"{mode} data: {_name(source)} has no entries"):
        return None
    if len(skipped) > limit * lines:
        problems.append(
            f"{mode} data: {len(skipped)} of {lines} lines of {_name(source)} cannot be used "
            f"({len(skipped) / lines:.1%}, above --config.data.max_skipped_lines={limit:g}), "
            f"e.g. {skipped[0]}; fix the list (python -m ppsn.data.check lists them all) or raise "
            "the limit")
        return None
    if not problems.need(len(source) > 0, f"{mode} data: {_name(source)} has no usable entries"):
        return None
    return source


def _label_names(path: str, num_classes: int, problems: _Problems) -> list[str] | None:
    from ppsn.data.labels import read_label_names

    try:
        names = read_label_names(path)
    except (OSError, ValueError) as e:
        problems.append(f"--config.data.label_list: {e}")
        return None
    missing = [i for i in range(num_classes) if i not in names]
    extra = sorted(i for i in names if not 0 <= i < num_classes)
    if missing or extra:
        what = (f"has no name for {len(missing)} of the {num_classes} classes (e.g. id "
                f"{missing[0]})" if missing else f"has ids beyond the {num_classes} classes "
                f"(e.g. {extra[0]})")
        problems.append(f"--config.data.label_list={path} {what}: it names {len(names)} "
                        f"classes, the model has {num_classes} (--config.model.num_classes)")
        return None
    return [names[i] for i in range(num_classes)]


# ------------------------------------------------------------------------------ checkpoints


def _read_meta(path: str) -> dict | None:
    from ppsn import checkpoint

    meta_path = paths.path(paths.join(path, checkpoint.META_FILE))
    if not meta_path.is_file() or not paths.is_dir(paths.join(path, checkpoint.VARIABLES_DIR)):
        return None
    return json.loads(meta_path.read_text())


def _check_checkpoint(field: str, path: str, depth: int, problems: _Problems,
                      num_classes: int | None = None) -> None:
    """A ppsn variables checkpoint at ``path`` holding a ResNet-``depth``-vd (and
    ``num_classes`` classes when given)."""
    if not paths.exists(path):
        problems.append(f"--config.{field}={path} does not exist (convert a PaddleVideo / "
                        f"PaddleClas file with: python -m ppsn.convert.paddle --pdparams FILE "
                        f"--depth {depth} --output {path})")
        return
    meta = _read_meta(path)
    if meta is None:
        problems.append(f"--config.{field}={path} is not a ppsn checkpoint (no variables/ and "
                        "ppsn.json)")
        return
    if meta.get("depth") is not None and int(meta["depth"]) != depth:
        problems.append(f"--config.{field}={path} holds a ResNet-{meta['depth']}-vd; the run "
                        f"needs a ResNet-{depth}-vd")
    if num_classes is not None and meta.get("num_classes") not in (None, num_classes):
        problems.append(f"--config.{field}={path} has {meta['num_classes']} classes; the model "
                        f"has {num_classes}")


def _check_init_checkpoints(config, workdir: str | None, problems: _Problems) -> None:
    """``init_from`` / ``pretrained`` (the first one set; not when the run resumes) and the
    distillation teacher."""
    from ppsn import checkpoint
    from ppsn.models.plan import STAGE_BLOCKS

    resuming = bool(workdir and checkpoint.saved_steps(workdir))
    if resuming:  # the config the checkpoints were made with: only safe changes
        from ppsn import resume_compat

        problems.need(not (message := resume_compat.check(config, workdir)), message)
    if not resuming and config.model.depth in STAGE_BLOCKS:
        for field in ("init_from", "pretrained"):
            if config[field]:
                _check_checkpoint(field, config[field], config.model.depth, problems)
                break
    dist = config.distill
    teacher_needed = dist.mode == "kd" or (dist.mode == "dml" and not resuming)
    if teacher_needed and dist.teacher_checkpoint and dist.teacher_depth in STAGE_BLOCKS:
        _check_checkpoint("distill.teacher_checkpoint", dist.teacher_checkpoint,
                          dist.teacher_depth, problems, config.model.num_classes)


def _weights(path: str | None, config, problems: _Problems):
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
    or None. The depth and class count come first (from ``meta``, else from the arrays)."""
    import jax

    from ppsn.models import plan
    from ppsn.train import initialize

    depth = meta.get("depth") or plan.depth_of_variables(variables)
    bias = variables.get("params", {}).get("fc", {}).get("bias")
    classes = meta.get("num_classes") or (None if bias is None else int(bias.shape[0]))
    want_depth, want_classes = config.model.depth, config.model.num_classes
    if depth is not None and int(depth) != want_depth:
        return (f"{meta.get('path', 'the checkpoint')} holds a ResNet-{depth}-vd; the config "
                f"asks for ResNet-{want_depth}-vd (--config.model.depth={depth}, or other weights)")
    if bias is None:
        return (f"{meta.get('path', 'the checkpoint')} has no classifier (an ImageNet backbone?): "
                "test and export need a whole model")
    if classes is not None and int(classes) != want_classes:
        return (f"{meta.get('path', 'the checkpoint')} has {classes} classes; the config has "
                f"{want_classes} (--config.model.num_classes={classes}, or other weights)")
    expected = jax.eval_shape(lambda: initialize.scratch_variables(
        initialize.build_model(config), 0))
    want = {jax.tree_util.keystr(p): tuple(x.shape)
            for p, x in jax.tree_util.tree_flatten_with_path(expected)[0]}
    got = {jax.tree_util.keystr(p): tuple(x.shape)
           for p, x in jax.tree_util.tree_flatten_with_path(variables)[0]}
    differ = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
    if differ:
        return (f"{meta.get('path', 'the checkpoint')} does not fit the config's "
                f"ResNet-{want_depth}-vd TSN: {len(differ)} arrays differ, e.g. {differ[0]}: "
                f"checkpoint {got.get(differ[0])} vs model {want.get(differ[0])}")
    return None
