"""``pipeline``: the host side of the real input pipeline, as training / validation / test mode
run it (the source, sampling, decoding of the sampled frames, host transforms, Grain batching,
worker processes), over one video drawn repeatedly. ``--source list`` reads it through a
PaddleVideo list file, ``--source tfds`` through a dataset ``ppsn.data.prepare`` wrote from it
(per-frame records). Without ``--data`` it generates a 300-frame 340x256 JPEG frames folder or,
with ``--data_format videos``, two 10 s 340x256 h264 videos with keyframe intervals of 250 and
12 (``--gops``). The clip spec is the recipe's (``ppsn.data.datasets.clip_spec``): test mode hands the
device scaled frames on a canvas and the device cuts the TenCrop views, so the test figure is
the host part of test mode.

Reported (final JSON line): ``ms_per_clip`` and ``clips_per_s`` (wall time, all workers
together, for the largest ``--workers``), ``cpu_ms_per_clip`` (CPU time of the same clips made
in process: 1000 / it is clips/s per core, the figure a busy machine distorts least),
``clips_per_s_by_workers`` (``--workers 1,2``: one
run per count, in the same command; with ``--repeats R``, R interleaved runs each, a figure is
their median and a ratio the median of the R runs' ratios, ``scaling_by_repeat`` lists them),
``clips_per_s_by_setting`` and
``gain_by_workers`` (``--compare FIELD=A,B``: two or more values of a ``config.data`` loading
field, e.g. ``retain_freed_mb=0,64`` or ``handoff=grain,ring``, run interleaved in the same
command; the gain is the last value's clips/s over the first's), ``bytes_read_per_clip`` (what the source read from files,
``/proc/self/io`` rchar over in-process clips), ``sampled_bytes_per_clip`` (the encoded bytes of
the distinct frames the clips sample; frames only; ``video_bytes``: all the video's frames) and,
for videos, ``ms_per_clip_by_gop``.
The machine's ``load_average`` is reported too: on a shared machine the figures are only
comparable within one command.

Measured on the project's 2-core AMD EPYC (AVX2 only, 2026-11-29): a worker makes train clips at
about its in-process rate (1.6-2.3 ms CPU per clip); with 2 workers the machine is busy 1.96-2.01
cores and the main process takes ~5% of a core (0.075 ms per train clip), so the 2-vs-1 ceiling
there is ~1.9x. The same clip's CPU time drifted by up to 50% within a minute on that VM, hence
medians of back-to-back repeats run in alternating order. Test mode at one video per batch gave
1.67-1.77x with 2 workers (8 videos per batch: ~1.9x). Before the ring hand-over
(:mod:`ppsn.data.handoff`) and retained memory (:mod:`ppsn.data.host_memory`) one worker made
~335 train clips/s and 31 test videos/s, its pages faulted afresh for every batch (~5 ms per
3.6 MB batch). From long-GOP videos a GPU's 1,000-1,600 clips/s would take 55-90 cores: prepare
``frames`` for such runs.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np

from ppsn.benchmark import plan, timing


def add_parser(sub):
    p = sub.add_parser("pipeline", help="host input pipeline throughput and bytes read per clip")
    p.add_argument("--mode", choices=("train", "valid", "test"), default="train")
    p.add_argument("--source", choices=("list", "tfds"), default="list",
                   help="a list file, or a TFDS dataset prepared from the same video")
    p.add_argument("--data", default=None, help="a frames folder or a video file")
    p.add_argument("--data_format", choices=("frames", "videos"), default="frames",
                   help="what to generate when --data is not given")
    p.add_argument("--gops", default="250,12",
                   help="keyframe intervals of the generated h264 videos (--data_format videos)")
    p.add_argument("--workers", default="0",
                   help="Grain worker processes (0: in process), or a list such as 1,2")
    p.add_argument("--compare", default=None, metavar="FIELD=A,B",
                   help="compare values of a config.data loading field, e.g. retain_freed_mb=0,64 "
                        "or handoff=grain,ring (needs --workers >= 1: each run starts its workers; "
                        "a retain_freed_mb above 0 also stays set in this process from its first "
                        "run on)")
    p.add_argument("--num_clips", type=int, default=200)
    p.add_argument("--num_seg", type=int, default=None, help="default 3 (train/valid), 25 (test)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per setting and worker count, interleaved; each figure is the "
                        "median over repeats, each ratio the median of the repeats' ratios "
                        "(machines whose speed drifts)")
    plan.add_arguments(p)
    return p


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar"))


def _source(path: str, fmt: str, kind: str, mode: str, tmp: str):
    """The production source over ``path`` (list file, or a dataset prepared from it)."""
    from ppsn.data.lists import ListFileSource

    manual = os.path.join(tmp, f"manual_{kind}_{len(os.listdir(tmp))}")
    os.makedirs(manual)
    record = timing.record_for(path)
    line = (f"{os.path.abspath(path)} {record['num_frames']} 0\n" if fmt == "frames"
            else f"{os.path.abspath(path)} 0\n")
    names = (("train_frames.list", "val_frames.list") if fmt == "frames"
             else ("train.list", "val.list"))
    for name in names:
        with open(os.path.join(manual, name), "w") as f:
            f.write(line)
    if kind == "list":
        return ListFileSource(os.path.join(manual, names[0]), fmt)
    from ppsn.data.prepare import prepare
    from ppsn.data.tfds import TfdsSource

    prepare("kinetics400", manual, os.path.join(manual, "tfds"), fmt)
    return TfdsSource("kinetics400", "train" if mode == "train" else "val",
                      os.path.join(manual, "tfds"), fmt)


def _sampled_bytes(record, spec, draws: int) -> tuple[float, int] | tuple[None, None]:
    """Mean encoded bytes of the distinct frames a clip samples, and of all the video's frames
    (frames only)."""
    from ppsn.data import decode, sampling

    if "frame_dir" in record:
        sizes = [os.path.getsize(decode.frame_path(record["frame_dir"], i))
                 for i in range(record["num_frames"])]
    elif "jpegs" in record:
        sizes = [len(j) for j in record["jpegs"]]
    else:
        return None, None
    mode = spec.sampling or spec.mode
    total = 0
    for seed in range(draws):
        wanted = set(sampling.sample_segments(len(sizes), spec.num_seg, mode,
                                              np.random.default_rng(seed)).tolist())
        total += sum(sizes[i] for i in wanted)
    return total / draws, sum(sizes)


def _dataset(source, spec, batch_size, mode):
    from ppsn.data import datasets

    if mode == "train":
        return datasets.train_dataset(source, spec, batch_size, seed=0, process_index=0,
                                      process_count=1)
    return datasets.eval_dataset(source, spec, batch_size, process_index=0, process_count=1)


def _in_process_costs(ds, batches: int) -> tuple[float, float]:
    """Bytes read (rchar) and CPU milliseconds per clip over in-process batches (random access:
    no read-ahead counted)."""
    ds[0]  # files opened, first reads done
    start, cpu = _rchar(), time.process_time()
    clips = sum(len(ds[i]["label"]) for i in range(1, 1 + batches))
    return (_rchar() - start) / clips, (time.process_time() - cpu) * 1e3 / clips


def _settings(compare: str | None, data_cfg) -> list[tuple[str, Any] | None]:
    """``FIELD=A,B`` -> ``[(FIELD, A), (FIELD, B)]`` with values typed as the config's field."""
    if not compare:
        return [None]
    field, _, values = compare.partition("=")
    if field not in data_cfg or field in ("num_workers",) or not values:
        raise SystemExit(f"error: --compare wants FIELD=A,B with a config.data loading field "
                         f"(not num_workers: use --workers), got {compare!r}")
    kind = type(data_cfg[field])
    return [(field, kind(v)) for v in values.split(",")]


def _label(setting) -> str:
    return "default" if setting is None else f"{setting[0]}={setting[1]}"


def _paired(base: list[float], other: list[float]) -> float:
    """The median of ``other / base`` over repeats (each repeat's runs follow one another, so
    they share the machine's speed of the moment)."""
    return statistics.median(o / b for b, o in zip(base, other))


def _clips_per_s(ds, data_cfg, workers: int, setting: tuple[str, Any] | None, num_clips: int
                 ) -> tuple[float, list[int]]:
    from ppsn.data import loading

    data_cfg.num_workers = workers
    if setting:
        data_cfg[setting[0]] = setting[1]
    loader = loading.loader_settings(data_cfg)
    it = loading.to_iterator(ds, loader)
    # Untimed: start-up (every worker makes a batch) and the batches read ahead meanwhile, so
    # that the timed ones are made while timed (else more workers, more buffers, faster).
    for _ in range(max(1, workers) + loader.read_ahead):
        warm = next(it)
    clips = 0
    start = time.perf_counter()
    while clips < num_clips:
        clips += len(next(it)["label"])
    elapsed = time.perf_counter() - start
    it.close()
    return clips / elapsed, list(warm["frames"].shape)


def _inputs(args, tmp: str):
    """The benchmark's data: ``(format, {name: path})``."""
    if args.data:
        fmt = "frames" if os.path.isdir(args.data) else "videos"
        return fmt, {os.path.basename(args.data.rstrip("/")): args.data}
    if args.data_format == "videos":
        return "videos", {gop: timing.h264_video(tmp, int(gop)) for gop in args.gops.split(",")}
    return "frames", {"frames": timing.benchmark_video(tmp, "frames")}


def _measure(args, path: str, fmt: str, spec, data_cfg, workers, settings, tmp: str) -> dict:
    """Clips per second of one input by setting and workers (repeats interleaved), and the
    bytes read and CPU time per clip in this process."""
    from ppsn.data import host_memory, loading

    source = _source(path, fmt, args.source, args.mode, tmp)
    n = args.num_clips + args.batch_size * (5 * max(workers) + 6)
    ds = _dataset(timing.RepeatedSource(source, n), spec, args.batch_size, args.mode)
    runs, shape = {_label(t): {str(w): [] for w in workers} for t in settings}, None
    for repeat in range(args.repeats):
        for setting in settings:  # every other repeat in reverse: a drift hits both
            for w in (workers if repeat % 2 == 0 else workers[::-1]):
                rate, shape = _clips_per_s(ds, data_cfg, w, setting, args.num_clips)
                runs[_label(setting)][str(w)].append(rate)
    sampled, video = _sampled_bytes(source[0], spec, 32)
    data_cfg.num_workers = 0
    host_memory.retain_freed(loading.loader_settings(data_cfg).retain_freed_mb)
    read, cpu_ms = _in_process_costs(ds, max(1, 32 // args.batch_size))
    by_setting = {k: {w: statistics.median(r) for w, r in by_w.items()}
                  for k, by_w in runs.items()}
    return {"by_workers": by_setting[_label(settings[-1])], "by_setting": by_setting,
            "runs": runs, "shape": shape, "sampled": sampled, "bytes": read, "cpu_ms": cpu_ms,
            "video": video}


def _summary(args, spec, fmt: str, workers, first: dict) -> dict:
    """The JSON line's figures of the first input with the most workers."""
    from ppsn.data import loading

    best = first["by_workers"][str(workers[-1])]
    out = {"benchmark": "pipeline", "mode": args.mode, "source": args.source,
           "num_seg": spec.num_seg, "views_per_clip": spec.views, "batch_shape": first["shape"],
           "device_crops": spec.device_crops,
           "data": args.data or (f"generated 10 s 340x256 h264, keyframe every {args.gops} frames"
                                 if fmt == "videos" else "generated 300-frame 340x256 frames"),
           "workers": workers[-1] if len(workers) == 1 else workers,
           "clips": args.num_clips, "ms_per_clip": round(1e3 / best, 3),
           "clips_per_s": round(best, 2),
           "cpu_ms_per_clip": round(first["cpu_ms"], 3),
           "bytes_read_per_clip": round(first["bytes"]),
           "sampled_bytes_per_clip": first["sampled"] and round(first["sampled"]),
           "cpus": loading.available_cpus(), "cpu": timing.cpu_name(),
           "load_average": [round(x, 2) for x in os.getloadavg()]}
    if first["sampled"]:
        out["read_per_sampled_byte"] = round(first["bytes"] / first["sampled"], 3)
        out["video_bytes"] = first["video"]  # what one record per video read per clip
    return out


def _comparisons(out: dict, args, workers, settings, first: dict) -> None:
    """Add the ratios between worker counts and between settings (paired by repeat)."""
    if len(workers) > 1:
        out["clips_per_s_by_workers"] = {w: round(v, 2) for w, v in first["by_workers"].items()}
        last = first["runs"][_label(settings[-1])]
        out["scaling_vs_fewest_workers"] = round(
            _paired(last[str(workers[0])], last[str(workers[-1])]), 3)
        if args.repeats > 1:
            out["scaling_by_repeat"] = [round(o / b, 3) for b, o in
                                        zip(last[str(workers[0])], last[str(workers[-1])])]
    if len(settings) > 1:
        out["clips_per_s_by_setting"] = {
            k: {w: round(v, 2) for w, v in by_w.items()} for k, by_w in first["by_setting"].items()}
        base, last = (first["runs"][_label(t)] for t in (settings[0], settings[-1]))
        out["gain_by_workers"] = {w: round(_paired(base[w], last[w]), 3) for w in last}


def run(args) -> dict:
    if args.plan:
        return plan.run(args)
    from ppsn.data import datasets, loading
    from ppsn.recipe import pptsn_config

    data_cfg = pptsn_config().data
    if args.num_seg:
        data_cfg.num_seg = data_cfg.test_num_seg = args.num_seg
    spec = datasets.clip_spec(data_cfg, args.mode)
    workers = [int(w) for w in str(args.workers).split(",")]
    settings = _settings(args.compare, data_cfg)
    if len(settings) > 1 and min(workers) < 1:
        raise SystemExit("error: --compare needs --workers >= 1 (a setting of this process "
                         "cannot be undone; each run starts new workers)")
    with tempfile.TemporaryDirectory() as tmp:
        fmt, inputs = _inputs(args, tmp)
        results = {name: _measure(args, path, fmt, spec, data_cfg, workers, settings, tmp)
                   for name, path in inputs.items()}
    first = results[next(iter(results))]
    out = _summary(args, spec, fmt, workers, first)
    _comparisons(out, args, workers, settings, first)
    data_cfg.num_workers = workers[-1]  # the settings of the reported runs
    loader = loading.loader_settings(data_cfg)
    out["loader"] = {"worker_buffer_size": loader.worker_buffer_size,
                     "prefetch_batches": loader.prefetch_batches,
                     "decode_threads": loader.decode_threads,
                     "retain_freed_mb": loader.retain_freed_mb, "handoff": loader.handoff}
    if fmt == "videos" and not args.data:
        out["ms_per_clip_by_gop"] = {g: round(1e3 / r["by_workers"][str(workers[-1])], 3)
                                     for g, r in results.items()}
        out["cpu_ms_per_clip_by_gop"] = {g: round(r["cpu_ms"], 3) for g, r in results.items()}
    return out
