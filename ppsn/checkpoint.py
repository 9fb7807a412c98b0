"""Every read and write of model variables and train state, and finding them (Orbax).

A *variables checkpoint* is a directory holding::

    DIR/variables/   an Orbax (StandardCheckpointer) tree {'params', 'batch_stats'}
    DIR/ppsn.json    what the tree is: depth, num_classes, where it came from

It is what ``python -m ppsn.convert.paddle`` writes, what a run keeps as ``WORKDIR/best`` and
what fine-tuning (``init_from``), test mode and export load. *Train checkpoints*
(``WORKDIR/checkpoints/<step>``, :class:`TrainCheckpointer`) hold the whole train state, the
rng, the data position (``position``: global, so a checkpoint resumes on any number of processes
and devices with the same global batch), each process's Grain iterator and ``meta`` (the task,
which subtree of the state is the served model, depth and classes). :func:`load_weights` finds
the served variables in any of these.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

import numpy as np

from ppsn import outputs, paths
from ppsn.outputs import prepare_replacement, replacement_path, replacing, swap_in  # noqa: F401

log = logging.getLogger(__name__)
POSITION = "position"  # the global data position item of a train checkpoint

VARIABLES_DIR = "variables"
META_FILE = "ppsn.json"
BEST_DIR = "best"
TRAIN_DIR = "checkpoints"
COMMIT_MARKER = "commit_success.txt"  # Orbax's: a step written in a bucket is complete


def _is_primary() -> bool:
    import jax

    return jax.process_index() == 0


def sync(name: str) -> None:
    """Wait for every JAX process (nothing to wait for with one)."""
    _sync(name)


def _sync(name: str) -> None:
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# --- writing in place of an earlier output: ppsn.outputs (re-exported) -------------------------


def check_replaceable(directory: str | os.PathLike, *, force: bool, marker: str = META_FILE,
                      kind: str = "ppsn checkpoint") -> None:
    """:func:`ppsn.outputs.check_replaceable`, for a checkpoint by default."""
    outputs.check_replaceable(directory, force=force, marker=marker, kind=kind)


def _write_meta(tmp: str, meta: Mapping[str, Any]) -> None:
    paths.path(paths.join(tmp, META_FILE)).write_text(
        json.dumps(dict(meta), indent=2, sort_keys=True))


# ----------------------------------------------------------------------------------------------


def _write_tree(path: str, tree) -> None:
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, tree)
        ckptr.wait_until_finished()


def save_variables(directory: str | os.PathLike, variables: Mapping[str, Any],
                   meta: Mapping[str, Any], *, force: bool = False) -> str:
    """Write ``variables`` (a pytree of arrays) and ``meta`` (JSON-able) to ``directory``.

    ``force`` replaces an existing ppsn checkpoint, nothing else (:func:`check_replaceable`).
    The new checkpoint is written to a temporary sibling and renamed into place: a failure
    while writing leaves the old checkpoint as it was, and only a crash between the two renames
    of the swap leaves it at ``directory + '.ppsn-old'`` instead (the next save keeps it until
    its own swap).

    With several JAX processes every process must call it (Orbax coordinates them); process 0
    does the file-system work."""
    directory = outputs.absolute(directory)
    check_replaceable(directory, force=force)
    primary = _is_primary()
    tmp = outputs.replacement_path(directory)
    if primary:
        outputs.prepare_replacement(directory, META_FILE)
    _sync("ppsn:save_variables:start")
    try:
        _write_tree(paths.join(tmp, VARIABLES_DIR), {k: v for k, v in variables.items()})
        if primary:
            _write_meta(tmp, meta)
    except BaseException:
        if primary:
            paths.remove_tree(tmp)
        raise
    _sync("ppsn:save_variables:written")
    if primary:
        outputs.swap_in(directory, META_FILE)
    _sync("ppsn:save_variables:end")
    return directory


def load_variables(directory: str | os.PathLike) -> tuple[dict, dict]:
    """Read a variables checkpoint; returns ``(variables as numpy arrays, meta)``."""
    import orbax.checkpoint as ocp

    directory = outputs.absolute(directory)
    meta = read_meta(directory)
    if meta is None:
        raise FileNotFoundError(
            f"{directory}: not a ppsn variables checkpoint (expected {VARIABLES_DIR}/ and {META_FILE})"
        )
    tree_dir = paths.path(paths.join(directory, VARIABLES_DIR))
    with ocp.StandardCheckpointer() as ckptr:
        variables = ckptr.restore(tree_dir)
    variables = _to_numpy(variables)
    return variables, meta


def _to_numpy(tree):
    if isinstance(tree, Mapping):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def load_weights(path: str | os.PathLike) -> tuple[dict, dict]:
    """The served model's variables (numpy) from a variables checkpoint, or from a training
    workdir (its ``best/``, else its latest train checkpoint); returns ``(variables, meta)``
    where ``meta`` records ``path`` (what was read), and ``depth`` / ``num_classes`` when the
    checkpoint says them."""
    path = outputs.absolute(path)
    for candidate in (path, paths.join(path, BEST_DIR)):
        if paths.exists(paths.join(candidate, META_FILE)):
            variables, meta = load_variables(candidate)
            return variables, {**meta, "path": candidate}
    train_dir = paths.join(path, TRAIN_DIR)
    steps = saved_steps(path)
    if not steps:
        raise FileNotFoundError(f"{path}: not a ppsn checkpoint (no {META_FILE}, {BEST_DIR}/ "
                                f"or {TRAIN_DIR}/ with a saved step)")
    return TrainCheckpointer.read_served(train_dir, steps[-1])


def saved_steps(workdir: str | os.PathLike) -> list[int]:
    """The steps of the complete train checkpoints in ``workdir/checkpoints``, oldest first
    (locally Orbax renames a finished step into place; in a bucket it writes
    ``commit_success.txt`` into it last)."""
    train_dir = paths.join(outputs.absolute(workdir), TRAIN_DIR)
    remote = paths.is_remote(train_dir)
    return sorted(int(p) for p in paths.listdir(train_dir) if p.isdigit() and (
        not remote or paths.exists(paths.join(train_dir, p, COMMIT_MARKER))))


def read_meta(directory: str | os.PathLike) -> dict | None:
    """The ``ppsn.json`` of the variables checkpoint ``directory``; None if it is not one (no
    ``ppsn.json`` or no ``variables/``)."""
    directory = outputs.absolute(directory)
    meta_path = paths.path(paths.join(directory, META_FILE))
    if not meta_path.is_file() or not paths.is_dir(paths.join(directory, VARIABLES_DIR)):
        return None
    return json.loads(meta_path.read_text())


class TrainCheckpointer:
    """Periodic train checkpoints in ``workdir/checkpoints``: the train state (params,
    batch_stats, optimizer state, step), the base rng, every process's Grain iterator state and
    ``meta`` (JSON: the task's description of the served model, see
    :meth:`ppsn.train.tasks.Task.meta`).

    Saving is asynchronous and atomic (Orbax writes to a temporary directory and renames it), so
    a run killed at any moment restarts from its last complete checkpoint; the newest ``keep``
    are kept.

    The data position is saved globally too (``position``: batches consumed, the global batch,
    the samples consumed, the process count): every process's stream is the same global stream
    split by process, so ``batches_consumed`` global batches is one position whatever the
    number of processes and devices. A resumed run restores it from there (Grain's per-process
    files only serve checkpoints without it), on any topology with the same global batch
    (``global_batch``); another global batch is refused with one line naming both."""

    def __init__(self, workdir: str, keep: int = 3, global_batch: int | None = None):
        import grain
        import orbax.checkpoint as ocp

        self._ocp, self._grain = ocp, grain
        self.directory = paths.join(outputs.absolute(workdir), TRAIN_DIR)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": grain.checkpoint.CheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler(),
                           POSITION: ocp.JsonCheckpointHandler()},
        )
        self.global_batch = global_batch

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, rng, data_iterator, meta: Mapping[str, Any]) -> None:
        ocp = self._ocp
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave({"state": state, "rng": rng}),
            data=self._grain.checkpoint.CheckpointSave(data_iterator),
            meta=ocp.args.JsonSave(dict(meta)),
            position=ocp.args.JsonSave(self._position(data_iterator))))

    def _position(self, data_iterator) -> dict:
        import jax

        consumed = int(json.loads(data_iterator.get_state())["batches_consumed"])
        return {"batches_consumed": consumed, "global_batch": self.global_batch,
                "samples_consumed": consumed * (self.global_batch or 0),
                "process_count": jax.process_count()}

    def restore(self, abstract_state, abstract_rng, data_iterator, step: int | None = None):
        """Restores into ``data_iterator`` in place; returns ``(state, rng, step)``."""
        ocp = self._ocp
        step = self.manager.latest_step() if step is None else step
        state = ocp.args.StandardRestore({"state": abstract_state, "rng": abstract_rng})
        if not paths.path(paths.join(self.directory, str(step), POSITION)).exists():
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=state, data=self._grain.checkpoint.CheckpointRestore(data_iterator)))
            return restored.state["state"], restored.state["rng"], step
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=state, position=ocp.args.JsonRestore()))
        self._restore_position(restored[POSITION], data_iterator, step)
        return restored.state["state"], restored.state["rng"], step

    def _restore_position(self, position: dict, data_iterator, step: int) -> None:
        import jax

        from ppsn import cli

        saved = position.get("global_batch")
        if self.global_batch and saved and saved != self.global_batch:
            raise cli.ConfigError(
                f"{paths.join(self.directory, str(step))} was trained with global batch "
                f"{saved}, this run has --config.batch_size={self.global_batch}: resume with "
                f"--config.batch_size={saved} (or start a new workdir)")
        if position.get("process_count") != jax.process_count():
            log.info("data position: %d global batches of %s consumed by %s processes, "
                     "continued by %d", position["batches_consumed"], saved,
                     position.get("process_count"), jax.process_count())
        data_iterator.set_state({"batches_consumed": position["batches_consumed"]})

    @staticmethod
    def read_served(directory: str, step: int) -> tuple[dict, dict]:
        """The served variables (numpy) and meta of train checkpoint ``step`` in ``directory``."""
        import jax
        import orbax.checkpoint as ocp

        step_dir = paths.join(directory, str(step))
        with ocp.StandardCheckpointer() as ckptr:
            state = ckptr.restore(paths.path(paths.join(step_dir, "state")))["state"]
        meta_dir = paths.path(paths.join(step_dir, "meta"))
        meta = {}
        if meta_dir.is_dir():
            meta = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(meta_dir)
        key = meta.get("serving_key")
        variables = {k: state[k][key] if key else state[k] for k in ("params", "batch_stats")}
        return jax.tree.map(np.asarray, variables), {**meta, "path": step_dir}

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.close()
