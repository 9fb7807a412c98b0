"""Training mode's entry: the pre-flight (:mod:`ppsn.preflight`), then the loop
(:mod:`ppsn.train.loop`), which is handed what the pre-flight read and never imports it.

``train_and_evaluate(config, workdir)`` is what ``python -m ppsn.main`` runs; notebooks, tests
and benchmarks call it (or :func:`setup`) directly.
"""

from __future__ import annotations

from ppsn import preflight
from ppsn.train import loop


def inputs_for(config):
    """``(devices, workdir) -> Inputs``: the training pre-flight of ``config``, once the
    devices are known (raises :class:`ppsn.cli.ConfigError` listing every problem)."""
    return lambda devices, workdir: preflight.check(config, "train", devices, workdir=workdir)


def setup(config, workdir: str, claim=None) -> loop.Run:
    """:func:`ppsn.train.loop.setup` after the pre-flight."""
    return loop.setup(config, workdir, inputs_for(config), claim)


def train_and_evaluate(config, workdir: str) -> dict:
    """Train (and validate) per ``config`` (:func:`ppsn.train.loop.train_and_evaluate`);
    returns the last validation metrics (or {})."""
    return loop.train_and_evaluate(config, workdir, inputs_for(config))
