"""Orbax checkpoints of model variables.

A *variables checkpoint* is a directory holding::

    DIR/variables/   an Orbax (StandardCheckpointer) tree {'params', 'batch_stats'}
    DIR/ppsn.json    what the tree is: depth, num_classes, where it came from

It is what ``python -m ppsn.convert.paddle`` writes and what fine-tuning (``init_from``), test
mode and export load.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Mapping

import numpy as np

VARIABLES_DIR = "variables"
META_FILE = "ppsn.json"


def save_variables(directory: str | os.PathLike, variables: Mapping[str, Any],
                   meta: Mapping[str, Any], *, force: bool = False) -> str:
    """Write ``variables`` (a pytree of arrays) and ``meta`` (JSON-able) to ``directory``."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory):
        if not force:
            raise FileExistsError(f"{directory} already exists (pass force=True / --force to overwrite)")
        shutil.rmtree(directory)
    os.makedirs(directory)
    tree = {k: v for k, v in variables.items()}
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(directory, VARIABLES_DIR), tree)
        ckptr.wait_until_finished()
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump(dict(meta), f, indent=2, sort_keys=True)
    return directory


def load_variables(directory: str | os.PathLike) -> tuple[dict, dict]:
    """Read a variables checkpoint; returns ``(variables as numpy arrays, meta)``."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(os.fspath(directory))
    tree_dir = os.path.join(directory, VARIABLES_DIR)
    meta_path = os.path.join(directory, META_FILE)
    if not os.path.isdir(tree_dir) or not os.path.isfile(meta_path):
        raise FileNotFoundError(
            f"{directory}: not a ppsn variables checkpoint (expected {VARIABLES_DIR}/ and {META_FILE})"
        )
    with open(meta_path) as f:
        meta = json.load(f)
    with ocp.StandardCheckpointer() as ckptr:
        variables = ckptr.restore(tree_dir)
    variables = _to_numpy(variables)
    return variables, meta


def _to_numpy(tree):
    if isinstance(tree, Mapping):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)
