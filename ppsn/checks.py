"""What the config checks share: a list of problems and the predicate "a finite number".

Each owner checks its own facts (the task its ``distill`` section, the optimizer its schedule,
the data sources their lists, :mod:`ppsn.checkpoint` whether a checkpoint fits a model) and
returns its problems as one-line strings; :mod:`ppsn.preflight` gathers them at the entry layer.
"""

from __future__ import annotations

import math


class Problems(list):
    """One-line problems, collected to be raised together."""

    def need(self, ok: bool, message: str) -> bool:
        if not ok:
            self.append(message)
        return ok


def finite(x) -> bool:
    """A real number (not a bool), neither infinite nor NaN."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
