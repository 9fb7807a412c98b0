"""One workdir for all hosts: every process of a multi-process run must see what process 0
writes in the workdir (checkpoints, ``best/``, the data position). A workdir on each host's own
disk is refused at start-up, before training, on every process with the same one line.

:func:`check_shared` (after ``jax.distributed`` is initialized): process 0 draws a nonce and
sends it to all, writes it to ``WORKDIR/.ppsn_shared_check``, a barrier, each process reads the
file, and all learn which processes saw the nonce.
"""

from __future__ import annotations

import secrets

import jax
import numpy as np

from ppsn import cli, paths

CHECK_FILE = ".ppsn_shared_check"


def check_shared(workdir: str) -> None:
    """Raises :class:`ppsn.cli.UserError` on every process unless all see process 0's nonce in
    ``workdir`` (one process: nothing to check)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    nonce = np.array([secrets.randbits(31) for _ in range(2)], np.int32)
    nonce = np.asarray(multihost_utils.broadcast_one_to_all(nonce))
    text = "".join(f"{int(v):08x}" for v in nonce)
    target = paths.path(paths.join(workdir, CHECK_FILE))
    if jax.process_index() == 0:
        target.write_text(text)
    multihost_utils.sync_global_devices("ppsn: workdir nonce written")
    try:
        seen = target.read_text().strip() == text
    except OSError:
        seen = False
    seen_by = np.asarray(multihost_utils.process_allgather(np.int32(seen))).reshape(-1)
    blind = [int(p) for p in np.flatnonzero(seen_by == 0)]
    if blind:
        raise cli.UserError(
            f"--workdir={workdir} is not shared by the {jax.process_count()} processes: "
            f"process{'es' if len(blind) > 1 else ''} {', '.join(map(str, blind))} do not see "
            "what process 0 writes there; use a shared file system or a gs:// bucket")
