"""Every read and write of model variables and train state, and finding them (Orbax).

A *variables checkpoint* is a directory holding::

    DIR/variables/   an Orbax (StandardCheckpointer) tree {'params', 'batch_stats'}
    DIR/ppsn.json    what the tree is: depth, num_classes, where it came from

It is what ``python -m ppsn.convert.paddle`` writes, what a run keeps as ``WORKDIR/best`` and
what fine-tuning (``init_from``), test mode and export load. *Train checkpoints*
(``WORKDIR/checkpoints/<step>``, :class:`TrainCheckpointer`) hold the whole train state, the
rng, each process's Grain iterator and ``meta`` (the task, which subtree of the state is the
served model, depth and classes). :func:`load_weights` finds the served variables in any of
these.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Mapping

import numpy as np

VARIABLES_DIR = "variables"
META_FILE = "ppsn.json"
BEST_DIR = "best"
TRAIN_DIR = "checkpoints"


def _is_primary() -> bool:
    import jax

    return jax.process_index() == 0


def _sync(name: str) -> None:
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def save_variables(directory: str | os.PathLike, variables: Mapping[str, Any],
                   meta: Mapping[str, Any], *, force: bool = False) -> str:
    """Write ``variables`` (a pytree of arrays) and ``meta`` (JSON-able) to ``directory``.

    With several JAX processes every process must call it (Orbax coordinates them); process 0
    does the file-system work."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not force:
        raise FileExistsError(f"{directory} already exists (pass force=True / --force to overwrite)")
    if _is_primary():
        if os.path.exists(directory):
            shutil.rmtree(directory)
        os.makedirs(directory)
    _sync("ppsn:save_variables:start")
    tree = {k: v for k, v in variables.items()}
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(directory, VARIABLES_DIR), tree)
        ckptr.wait_until_finished()
    if _is_primary():
        with open(os.path.join(directory, META_FILE), "w") as f:
            json.dump(dict(meta), f, indent=2, sort_keys=True)
    _sync("ppsn:save_variables:end")
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


def save_variables_atomically(directory: str | os.PathLike, variables, meta) -> str:
    """Like :func:`save_variables` with ``force``, but a crash never leaves ``directory``
    half-written: the new copy is complete before it replaces the old one."""
    directory = os.path.abspath(os.fspath(directory))
    tmp = directory + ".tmp"
    save_variables(tmp, variables, meta, force=True)
    if _is_primary():
        old = directory + ".old"
        if os.path.exists(directory):
            if os.path.exists(old):
                shutil.rmtree(old)
            os.rename(directory, old)
        os.rename(tmp, directory)
        if os.path.exists(old):
            shutil.rmtree(old)
    _sync("ppsn:save_variables_atomically:end")
    return directory


def load_weights(path: str | os.PathLike) -> tuple[dict, dict]:
    """The served model's variables (numpy) from a variables checkpoint, or from a training
    workdir (its ``best/``, else its latest train checkpoint); returns ``(variables, meta)``
    where ``meta`` records ``path`` (what was read), and ``depth`` / ``num_classes`` when the
    checkpoint says them."""
    path = os.path.abspath(os.fspath(path))
    for candidate in (path, os.path.join(path, BEST_DIR)):
        if os.path.exists(os.path.join(candidate, META_FILE)):
            variables, meta = load_variables(candidate)
            return variables, {**meta, "path": candidate}
    train_dir = os.path.join(path, TRAIN_DIR)
    steps = sorted(int(p) for p in os.listdir(train_dir) if p.isdigit()) if os.path.isdir(
        train_dir) else []
    if not steps:
        raise FileNotFoundError(f"{path}: not a ppsn checkpoint (no {META_FILE}, {BEST_DIR}/ "
                                f"or {TRAIN_DIR}/ with a saved step)")
    return TrainCheckpointer.read_served(train_dir, steps[-1])


class TrainCheckpointer:
    """Periodic train checkpoints in ``workdir/checkpoints``: the train state (params,
    batch_stats, optimizer state, step), the base rng, every process's Grain iterator state and
    ``meta`` (JSON: the task's description of the served model, see
    :meth:`ppsn.train.tasks.Task.meta`).

    Saving is asynchronous and atomic (Orbax writes to a temporary directory and renames it), so
    a run killed at any moment restarts from its last complete checkpoint; the newest ``keep``
    are kept."""

    def __init__(self, workdir: str, keep: int = 3):
        import grain
        import orbax.checkpoint as ocp

        self._ocp, self._grain = ocp, grain
        self.directory = os.path.join(os.path.abspath(workdir), TRAIN_DIR)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": grain.checkpoint.CheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()},
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, rng, data_iterator, meta: Mapping[str, Any]) -> None:
        ocp = self._ocp
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave({"state": state, "rng": rng}),
            data=self._grain.checkpoint.CheckpointSave(data_iterator),
            meta=ocp.args.JsonSave(dict(meta))))

    def restore(self, abstract_state, abstract_rng, data_iterator, step: int | None = None):
        """Restores into ``data_iterator`` in place; returns ``(state, rng, step)``."""
        ocp = self._ocp
        step = self.manager.latest_step() if step is None else step
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore({"state": abstract_state, "rng": abstract_rng}),
            data=self._grain.checkpoint.CheckpointRestore(data_iterator)))
        return restored.state["state"], restored.state["rng"], step

    @staticmethod
    def read_served(directory: str, step: int) -> tuple[dict, dict]:
        """The served variables (numpy) and meta of train checkpoint ``step`` in ``directory``."""
        import jax
        import orbax.checkpoint as ocp

        step_dir = os.path.join(directory, str(step))
        with ocp.StandardCheckpointer() as ckptr:
            state = ckptr.restore(os.path.join(step_dir, "state"))["state"]
        meta_dir = os.path.join(step_dir, "meta")
        meta = {}
        if os.path.isdir(meta_dir):
            meta = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(meta_dir)
        key = meta.get("serving_key")
        variables = {k: state[k][key] if key else state[k] for k in ("params", "batch_stats")}
        return jax.tree.map(np.asarray, variables), {**meta, "path": step_dir}

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.close()
