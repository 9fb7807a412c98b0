"""Two processes check a workdir local to each (refused) and then a shared one (accepted).

    python -m tests.shared_workdir_check ROOT

Launched by tests/test_shared_workdir.py with JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID; prints one JSON line per process.
"""

import json
import os
import sys

import jax

from ppsn import cli, parallel, shared_workdir


def main():
    root = sys.argv[1]
    parallel.initialize_distributed()
    out = {}
    own = os.path.join(root, f"host{jax.process_index()}")  # each "host" its own disk
    os.makedirs(own, exist_ok=True)
    for name, workdir in (("own", own), ("shared", root)):
        try:
            shared_workdir.check_shared(workdir)
            out[name] = "ok"
        except cli.UserError as e:
            out[name] = cli.one_line(e)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
