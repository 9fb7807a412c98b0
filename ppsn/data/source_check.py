"""A run's data source, built from its list (or TFDS split) and checked: it must have usable
entries, and past ``data.max_skipped_lines`` of its lines unusable the run refuses to start."""

from __future__ import annotations


def name(source) -> str:
    return getattr(source, "list_file", None) or repr(source)


def checked_source(config, mode: str):
    """``(source, None)`` of ``mode`` ('train', 'valid', 'test'), or ``(None, the problem)``."""
    from ppsn.data import datasets

    try:
        source = datasets.make_source(config.data, mode, config.model.num_classes)
    except (OSError, ValueError) as e:
        return None, f"{mode} data: {e}"
    skipped = getattr(source, "skipped", [])
    lines = len(source) + len(skipped)
    limit = config.data.max_skipped_lines
    if lines == 0:
        return None, f"{mode} data: {name(source)} has no entries"
    if len(skipped) > limit * lines:
        return None, (
            f"{mode} data: {len(skipped)} of {lines} lines of {name(source)} cannot be used "
            f"({len(skipped) / lines:.1%}, above --config.data.max_skipped_lines={limit:g}), "
            f"e.g. {skipped[0]}; fix the list (python -m ppsn.data.check lists them all) or raise "
            "the limit")
    if len(source) == 0:
        return None, f"{mode} data: {name(source)} has no usable entries"
    return source, None
