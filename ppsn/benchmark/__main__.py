"""``python -m ppsn.benchmark COMMAND ...``: runs one benchmark, prints its JSON line last."""

from __future__ import annotations

import argparse
import json
import sys

from ppsn.benchmark import eval as eval_benchmark
from ppsn.benchmark import aot, complexity, distill, loop, pipeline, predict, train_step

BENCHMARKS = {"pipeline": pipeline, "train_step": train_step, "loop": loop,
              "eval": eval_benchmark, "predict": predict,
              "distill": distill, "complexity": complexity, "aot": aot}


def main(argv=None) -> int:
    import ppsn.benchmark

    parser = argparse.ArgumentParser(prog="python -m ppsn.benchmark",
                                     description=ppsn.benchmark.__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in BENCHMARKS.values():
        module.add_parser(sub)
    args, extra = parser.parse_known_args(argv)
    if extra and (args.command != "aot" or not all(a.startswith("--config.") for a in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra  # aot's --config.FIELD=VALUE
    from ppsn import cli

    return cli.run(lambda: print(json.dumps(BENCHMARKS[args.command].run(args))))


if __name__ == "__main__":
    sys.exit(main())
