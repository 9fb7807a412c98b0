"""What a compiled XLA program communicates, read from its HLO text.

``collectives(hlo_text)`` -> ``{kind: {dtype: {"count": n, "bytes": b}}}``: each collective op
(``all-reduce``, ``all-gather``, ...; an async ``-start``/``-done`` pair counts once, at its
start) by the element type of its result, and the bytes of those results (for a tuple-shaped
all-reduce, the sum of its parts, counted under each part's dtype). Layout suffixes
(``{1,0:T(8,128)}``) and TPU memory-space annotations are ignored.
"""

from __future__ import annotations

import re

KINDS = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter",
         "collective-broadcast", "ragged-all-to-all")
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "bf16": 2, "f16": 2,
               "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}
_OP = re.compile(r"=\s*(.+?)\s+(" + "|".join(KINDS) + r")(-start)?\(")
_ARRAY = re.compile(r"\b([a-z]+\d*[a-z\d]*)\[([\d,]*)\]")


def collectives(hlo: str) -> dict:
    """``{kind: {dtype: {"count", "bytes"}}}`` of the collectives in ``hlo`` (see the module)."""
    out: dict = {}
    for line in hlo.splitlines():
        m = _OP.search(line)
        if not m:
            continue
        result_type, kind = m.group(1), m.group(2)
        if m.group(3) and kind != "all-reduce":
            result_type = _async_results(result_type)
        seen = set()
        for dtype, dims in _ARRAY.findall(result_type):
            if dtype not in DTYPE_BYTES:
                continue
            size = 1
            for d in filter(None, dims.split(",")):
                size *= int(d)
            entry = out.setdefault(kind, {}).setdefault(dtype, {"count": 0, "bytes": 0})
            entry["bytes"] += DTYPE_BYTES[dtype] * size
            if dtype not in seen:
                entry["count"] += 1
                seen.add(dtype)
    return out


def _async_results(result_type: str) -> str:
    """An all-gather or collective-permute ``-start`` returns ``(operand, result)`` (an
    all-reduce-start its results only): keep the result."""
    parts = _ARRAY.findall(result_type)
    if result_type.startswith("(") and len(parts) == 2:
        return "{}[{}]".format(*parts[1])
    return result_type


def total(collective: dict, kind: str, field: str = "bytes") -> int:
    """Summed over dtypes: ``total(c, 'all-reduce')`` bytes, or ``field='count'``."""
    return sum(v[field] for v in collective.get(kind, {}).values())
