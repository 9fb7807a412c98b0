"""PaddleVideo's label-list files (``Kinetics-400_label_list.txt``): ``id name`` per line."""

from __future__ import annotations


def read_label_names(path: str) -> dict[int, str]:
    """``{id: name}``; a malformed line, or an id or a name given twice, is a ``ValueError``
    naming the file and the line(s). A UTF-8 byte-order mark is skipped. ``path`` may be a
    ``gs://`` URL."""
    from ppsn import paths

    names, line_of_id, line_of_name = {}, {}, {}
    text = paths.path(path).read_bytes().decode("utf-8-sig")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=1)
        if len(fields) != 2 or not (fields[0].isascii() and fields[0].isdigit()):
            raise ValueError(f"{path}:{number}: expected 'id name', got {line.strip()!r}")
        label, name = int(fields[0]), fields[1].strip()
        for key, seen, what in ((label, line_of_id, "id"), (name, line_of_name, "name")):
            if key in seen:
                raise ValueError(f"{path}: lines {seen[key]} and {number} give the same {what} "
                                 f"{key!r}")
            seen[key] = number
        names[label] = name
    return names


def read_label_list(path: str) -> list[str]:
    """Names by id for a complete list (ids 0..n-1 without gaps)."""
    names = read_label_names(path)
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{path}: ids must be 0..{len(names) - 1} without gaps")
    return [names[i] for i in range(len(names))]


def class_names(path: str, num_classes: int) -> tuple[list[str] | None, str | None]:
    """``(names of classes 0..num_classes-1, None)`` from the label list ``path`` (the
    ``data.label_list`` field), or ``(None, the problem)``: unreadable, a class without a name,
    an id beyond the classes."""
    try:
        names = read_label_names(path)
    except (OSError, ValueError) as e:
        return None, f"--config.data.label_list: {e}"
    missing = [i for i in range(num_classes) if i not in names]
    extra = sorted(i for i in names if not 0 <= i < num_classes)
    if missing or extra:
        what = (f"has no name for {len(missing)} of the {num_classes} classes (e.g. id "
                f"{missing[0]})" if missing else f"has ids beyond the {num_classes} classes "
                f"(e.g. {extra[0]})")
        return None, (f"--config.data.label_list={path} {what}: it names {len(names)} "
                      f"classes, the model has {num_classes} (--config.model.num_classes)")
    return [names[i] for i in range(num_classes)], None
