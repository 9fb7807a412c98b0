"""What a resumed run may change: the config a workdir's checkpoints were made with
(``WORKDIR/config.json``) against the new one, before anything is written.

Safe to change (:data:`SAFE`): where the data is and how it is loaded, the log, validation and
checkpoint cadence, test-mode settings, an early stop (``max_steps``), the compilation cache,
the convolution implementation and ``amp`` (parameters and optimizer state are float32 either
way), and the paths of checkpoints a resumed run does not read (``init_from``, ``pretrained``)
or reads again (the ``kd`` teacher). Anything else that differs is refused: the model and its
head (shapes), the clip (segments, sizes), the data source, format and training split, the
global batch size, the epochs, the optimizer and its schedule, the loss, distillation and the
seed (the data order) are what the checkpoint was trained with.
"""

from __future__ import annotations

import json

from ppsn import paths

CONFIG_FILE = "config.json"  # a run's config, written once its pre-flight passed

SAFE = frozenset({
    "log_interval", "validate", "val_interval", "valid_batch_size", "test_batch_per_device",
    "checkpoint_every_steps", "keep_checkpoints", "max_steps", "compilation_cache_dir", "amp",
    "init_from", "pretrained", "model.conv_impl", "distill.teacher_checkpoint",
    "data.data_prefix", "data.train_list", "data.val_list", "data.test_list",
    "data.label_list", "data.tfds_name", "data.tfds_data_dir", "data.val_split",
    "data.test_split", "data.test_num_seg", "data.test_sampling", "data.test_crops_on_device",
    "data.test_canvas", "data.test_views_per_chunk", "data.num_workers",
    "data.worker_buffer_size", "data.prefetch_batches", "data.decode_threads",
    "data.retain_freed_mb", "data.handoff", "data.generate_toy", "data.max_skipped_lines",
})


def flatten(tree: dict, prefix: str = "") -> dict:
    """``{'model': {'depth': 50}}`` -> ``{'model.depth': 50}``."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def unsafe_changes(saved: dict, config) -> list[tuple[str, object, object]]:
    """``(field, saved value, new value)`` of every field outside :data:`SAFE` that differs
    (fields only one side has, from another ppsn version, are left out)."""
    old = flatten(saved)
    new = flatten(json.loads(config.to_json_best_effort()))
    return [(k, old[k], new[k]) for k in sorted(old.keys() & new.keys())
            if k not in SAFE and old[k] != new[k]]


def refusal(workdir: str, saved: dict, config) -> str | None:
    """The one-line refusal for resuming ``workdir``, whose config is ``saved``, as ``config``;
    None when every change is safe."""
    changes = unsafe_changes(saved, config)
    if not changes:
        return None
    what = ", ".join(f"{k} {old!r} -> {new!r}" for k, old, new in changes[:8])
    more = f" and {len(changes) - 8} more" if len(changes) > 8 else ""
    return (f"--workdir={workdir} holds checkpoints trained with another config: resuming would "
            f"change {what}{more} (the model's shapes or the training schedule); keep the values "
            f"of {paths.join(workdir, CONFIG_FILE)} or use another --workdir")


def check(config, workdir: str) -> str | None:
    """:func:`refusal` for resuming ``workdir`` as ``config``; None when the workdir has no
    readable ``config.json`` (an older run: nothing to compare)."""
    try:
        saved = json.loads(paths.path(paths.join(workdir, CONFIG_FILE)).read_text())
    except (OSError, ValueError):
        return None
    return refusal(workdir, saved, config) if isinstance(saved, dict) else None
