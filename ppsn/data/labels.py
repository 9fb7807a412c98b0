"""PaddleVideo's label-list files (``Kinetics-400_label_list.txt``): ``id name`` per line."""

from __future__ import annotations


def read_label_names(path: str) -> dict[int, str]:
    """``{id: name}``; a malformed line is a ``ValueError`` naming the file and line. ``path``
    may be a ``gs://`` URL."""
    from ppsn import paths

    names = {}
    text = paths.path(path).read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=1)
        if len(fields) != 2 or not fields[0].isdigit():
            raise ValueError(f"{path}:{number}: expected 'id name', got {line.strip()!r}")
        names[int(fields[0])] = fields[1].strip()
    return names


def read_label_list(path: str) -> list[str]:
    """Names by id for a complete list (ids 0..n-1 without gaps)."""
    names = read_label_names(path)
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{path}: ids must be 0..{len(names) - 1} without gaps")
    return [names[i] for i in range(len(names))]
