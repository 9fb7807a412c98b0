"""``distill``: does ``kd`` help on the toy data? Students alone vs distilled, over several seeds.

On the embedded toy dataset, through the production training entry point
(``ppsn.train_mode.train_and_evaluate``, what ``python -m ppsn.main`` runs):

1. unless ``--teacher`` is given, a teacher is trained once with the toy recipe
   (``configs/pptsn_toy.py``, seed 0, its 30 epochs);
2. for each seed of ``--seeds``, two students from scratch with
   ``configs/pptsn_toy_distill.py``: ``alone`` (``distill.mode=''``) and ``kd`` (the frozen
   teacher). Both arms use the same seed (initialization, data order, dropout), the same
   epochs and everything else the same: their ``config.json`` differ in ``distill.mode`` only.

Reports per seed the best validation Top-1 of each student (what ``WORKDIR/best`` keeps) and
the paired difference ``kd - alone``, each with mean / std (over seeds, ``ddof=1``; ``null``
for one seed) / min / max; the same for the last epoch's Top-1; the teacher's Top-1; the
CPU and the wall times. Every seed of ``--seeds`` is reported, none left out.

Runs go to ``--workdir/{teacher,seed<S>/alone,seed<S>/kd}`` (default: a temporary directory,
deleted afterwards); a run directory that already exists is refused (the run would resume).
The runs share one persistent compilation cache, so the seeds after the first load their slow
programs (the steps) from it.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import tempfile
import time

import ppsn
from ppsn.benchmark import timing

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(ppsn.__file__))),
                       "configs")
TEACHER_CONFIG = os.path.join(CONFIGS, "pptsn_toy.py")
STUDENT_CONFIG = os.path.join(CONFIGS, "pptsn_toy_distill.py")


def add_parser(sub):
    d = sub.add_parser("distill", help="toy students alone vs kd over several seeds (Top-1)")
    d.add_argument("--teacher", default=None,
                   help="a teacher checkpoint (a run's best/ or its workdir); default: train "
                   "one with the toy recipe")
    d.add_argument("--seeds", default="0,1,2", help="comma-separated student seeds")
    d.add_argument("--epochs", type=int, default=None,
                   help="student epochs (default: configs/pptsn_toy_distill.py's)")
    d.add_argument("--teacher_epochs", type=int, default=None,
                   help="epochs of the trained teacher (default: configs/pptsn_toy.py's)")
    d.add_argument("--workdir", default=None,
                   help="where the runs go (default: a temporary directory, deleted)")
    d.add_argument("--data", default=None,
                   help="the toy dataset (default: the configs' data/toy, generated if absent)")
    d.add_argument("--size", type=int, default=None,
                   help="training crop (frames scaled to 8/7; default: the toy recipe's)")
    d.add_argument("--batch", type=int, default=None,
                   help="global batch (default: the toy recipe's)")
    return d


def load_config(path: str):
    """``get_config()`` of a config file."""
    spec = importlib.util.spec_from_file_location("ppsn_benchmark_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _apply(config, args, seed: int, epochs: int | None, cache_dir: str):
    """The overrides the benchmark makes to a config file's config (both arms alike)."""
    if args.data:
        d = config.data
        d.data_prefix = args.data
        for split in ("train", "val", "test"):
            setattr(d, f"{split}_list", os.path.join(args.data, f"{split}_frames.list"))
        d.label_list = os.path.join(args.data, "label_list.txt")
    if args.size:
        config.data.target_size = args.size
        config.data.short_size = args.size * 8 // 7
    if args.batch:
        config.batch_size = config.valid_batch_size = args.batch
    if epochs:
        config.num_epochs = epochs
    config.seed = seed
    config.compilation_cache_dir = cache_dir
    return config


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"error: --seeds {text}: give comma-separated integers") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise SystemExit(f"error: --seeds {text}: give one or more distinct seeds")
    return seeds


def teacher_checkpoint(path: str) -> tuple[str, dict]:
    """The variables checkpoint behind ``--teacher`` (a run's ``best/`` or its workdir) and
    its meta."""
    from ppsn import checkpoint

    for candidate in (os.path.join(path, checkpoint.BEST_DIR), path):
        meta = checkpoint.read_meta(candidate)
        if meta is not None:
            return os.path.abspath(candidate), meta
    raise SystemExit(f"error: --teacher {path}: no ppsn checkpoint there (expected "
                     f"{checkpoint.META_FILE} in it or in its {checkpoint.BEST_DIR}/)")


def summary(values: list[float]) -> dict:
    """Per-seed values with their mean, std (ddof=1; None for one value), min and max."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    r = lambda v: None if v is None else round(v, 4)  # noqa: E731
    return {"per_seed": [r(v) for v in values], "mean": r(mean), "std": r(std),
            "min": r(min(values)), "max": r(max(values))}


def _train(config, workdir: str) -> tuple[float, float, float]:
    """One run through the production entry point: (best Top-1, last Top-1, wall seconds)."""
    from ppsn import train_mode
    from ppsn.train import validation

    start = time.perf_counter()
    last = train_mode.train_and_evaluate(config, workdir)
    wall = time.perf_counter() - start
    return validation.best_top1(workdir), float(last.get("top1", -1.0)), wall


def _note(text: str) -> None:
    print(f"distill benchmark: {text}", file=sys.stderr, flush=True)


def _check_new(args, seeds, root: str) -> None:
    """Refuse run directories that exist (the runs would resume)."""
    runs = [os.path.join(root, f"seed{s}", arm) for s in seeds for arm in ("alone", "kd")]
    if not args.teacher:
        runs.append(os.path.join(root, "teacher"))
    taken = [r for r in runs if os.path.exists(r)]
    if taken:
        raise SystemExit(f"error: {taken[0]} exists (the run would resume): give a new "
                         "--workdir")


def _teacher(args, root: str, cache: str) -> dict:
    """The teacher checkpoint: ``--teacher``, else one trained here (configs/pptsn_toy.py)."""
    if args.teacher:
        teacher, meta = teacher_checkpoint(args.teacher)
        return {"checkpoint": teacher, "top1": meta.get("top1"),
                "depth": int(meta.get("depth", 18)), "epochs": None, "wall": None}
    config = _apply(load_config(TEACHER_CONFIG), args, 0, args.teacher_epochs, cache)
    top1, _, wall = _train(config, os.path.join(root, "teacher"))
    _note(f"teacher: best Top-1 {top1:.4f} in {wall:.0f} s")
    return {"checkpoint": os.path.join(root, "teacher", "best"), "top1": top1,
            "depth": config.model.depth, "epochs": config.num_epochs, "wall": wall}


def _students(args, seeds, root: str, cache: str, teacher: dict):
    """Each seed's student trained alone and with KD: ``({arm: (best, last, wall) lists},
    epochs, student depth, clip size)``."""
    results = {"alone": ([], [], []), "kd": ([], [], [])}  # best, last, wall
    epochs = depth = size = None
    for seed in seeds:
        for arm in ("alone", "kd"):
            config = _apply(load_config(STUDENT_CONFIG), args, seed, args.epochs, cache)
            config.distill.teacher_checkpoint = teacher["checkpoint"]
            config.distill.teacher_depth = teacher["depth"]
            if arm == "alone":
                config.distill.mode = ""
            epochs, depth = config.num_epochs, config.model.depth
            size = config.data.target_size
            best, last, wall = _train(config, os.path.join(root, f"seed{seed}", arm))
            for values, v in zip(results[arm], (best, last, wall)):
                values.append(v)
            _note(f"seed {seed} {arm}: best Top-1 {best:.4f} (last {last:.4f}) in "
                  f"{wall:.0f} s")
    return results, epochs, depth, size


def run(args) -> dict:
    import jax

    seeds = parse_seeds(args.seeds)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.abspath(args.workdir or tmp)
        _check_new(args, seeds, root)
        cache = os.path.join(root, "compilation_cache")
        teacher = _teacher(args, root, cache)
        results, epochs, depth, size = _students(args, seeds, root, cache, teacher)

    (alone_best, alone_last, alone_wall), (kd_best, kd_last, kd_wall) = results.values()
    diff_best = [k - a for k, a in zip(kd_best, alone_best)]
    diff_last = [k - a for k, a in zip(kd_last, alone_last)]
    teacher_top1, teacher_wall = teacher["top1"], teacher["wall"]
    return {"benchmark": "distill", "seeds": seeds, "epochs": epochs,
            "student_depth": depth, "teacher_depth": teacher["depth"], "size": size,
            "teacher": args.teacher or "trained here (configs/pptsn_toy.py, seed 0)",
            "teacher_epochs": teacher["epochs"],
            "teacher_top1": None if teacher_top1 is None else round(float(teacher_top1), 4),
            "best_top1": {"alone": summary(alone_best), "kd": summary(kd_best),
                          "kd_minus_alone": summary(diff_best)},
            "last_top1": {"alone": summary(alone_last), "kd": summary(kd_last),
                          "kd_minus_alone": summary(diff_last)},
            "kd_better_seeds": sum(d > 0 for d in diff_best),
            "kd_worse_seeds": sum(d < 0 for d in diff_best),
            "cpu": timing.cpu_name(), "cpu_count": os.cpu_count(),
            "device": jax.local_devices()[0].device_kind,
            "teacher_wall_s": None if teacher_wall is None else round(teacher_wall, 1),
            "alone_wall_s": [round(w, 1) for w in alone_wall],
            "kd_wall_s": [round(w, 1) for w in kd_wall],
            "wall_s": round(time.perf_counter() - started, 1)}
