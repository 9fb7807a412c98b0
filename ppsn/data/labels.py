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
