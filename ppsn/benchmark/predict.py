"""``predict``: ``ppsn.predict``'s path for one video file (PyAV decoding of the sampled frames,
scaling, TenCrop on the host, then the exported model through ``--backend`` at
``--precision``) with random R50-vd weights exported with ``--onnx``, on a generated 300-frame
340x256 mp4 (or ``--data``), after one warm-up video.

Reports ``s_per_video`` and its host / model parts, and the same for ``--baseline`` (default:
the XLA backend) with ``speedup_vs_baseline``; ``--baseline`` may list several runners
(``openvino:bf16,openvino:fp32``): the first fills the ``baseline*`` fields, the others
``other_baselines``. An int8 runner (``--precision=int8`` or in ``--baseline``) exports the model
with ``--int8`` first, calibrated on ``--calibration_size`` copies of the benchmark video (the
calibration's content does not change the timing). ``--baseline unfolded`` times the model on the
same clip through the same backend and precision from an export without BatchNorm folding (``export
--nofold_bn``), the two interleaved: medians and ``model_speedup_vs_baseline`` (of folding).
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from ppsn.benchmark import timing


def add_parser(sub):
    r = sub.add_parser("predict", help="ppsn.predict time per video file (decode + TenCrop + "
                       "model) through a serving backend")
    r.add_argument("--backend", choices=("xla", "onnxruntime", "openvino"), default="openvino")
    r.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32")
    r.add_argument("--depth", type=int, default=50)
    r.add_argument("--num_seg", type=int, default=25)
    r.add_argument("--videos", type=int, default=2)
    r.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    r.add_argument("--data", default=None, help="a video file (default: a generated one)")
    r.add_argument("--baseline", default="xla",
                   help="backend[:precision][,...] timed in the same run for "
                   "speedup_vs_baseline, 'unfolded' (the same backend, BatchNorm not folded in "
                   "model.jax) or 'none'")
    r.add_argument("--calibration_size", type=int, default=4,
                   help="int8: calibration clips (copies of the benchmark video)")
    return r


def time_predict(model_dir, video, backend, precision, videos, threads) -> dict:
    from ppsn.serve.predictor import Predictor

    predictor = Predictor(model_dir, backend, precision, threads)
    host = model = 0.0
    for i in range(videos + 1):
        t0 = time.perf_counter()
        clip = predictor.clip(video)
        t1 = time.perf_counter()
        scores = predictor.scores(clip[None])
        t2 = time.perf_counter()
        if i > 0:  # the first video warms the runtime up
            host += t1 - t0
            model += t2 - t1
    if not np.all(np.isfinite(scores)):
        raise RuntimeError(f"{backend}:{precision} gave non-finite scores")
    return {"backend": backend, "precision": precision,
            "host_s_per_video": round(host / videos, 3),
            "model_s_per_video": round(model / videos, 3),
            "s_per_video": round((host + model) / videos, 3),
            "ms_per_view": round(model / videos / clip.shape[0] * 1e3, 2)}


def time_unfolded(folded_dir, unfolded_dir, video, args) -> dict:
    """The model time of one clip through both exports, interleaved (the order alternating
    every repeat, ``args.videos`` repeats after a warm-up of each): medians, and their ratio."""
    from ppsn.serve.predictor import Predictor

    folded, unfolded = (Predictor(d, args.backend, args.precision, args.threads)
                        for d in (folded_dir, unfolded_dir))
    clip = folded.clip(video)[None]
    times = {"folded": [], "unfolded": []}
    for i in range(args.videos + 1):
        pairs = [("folded", folded), ("unfolded", unfolded)]
        for name, predictor in pairs if i % 2 else pairs[::-1]:
            t0 = time.perf_counter()
            predictor.scores(clip)
            if i > 0:
                times[name].append(time.perf_counter() - t0)
    folded_s, unfolded_s = (float(np.median(times[k])) for k in ("folded", "unfolded"))
    return {"baseline": f"{args.backend}:{args.precision} without BatchNorm folding",
            "folded_model_s_per_video_median": round(folded_s, 3),
            "baseline_model_s_per_video_median": round(unfolded_s, 3),
            "model_speedup_vs_baseline": round(unfolded_s / folded_s, 3)}


def run(args) -> dict:
    import jax

    from ppsn.export import export_model
    from ppsn.recipe import pptsn_config
    from ppsn.train import initialize

    config = pptsn_config()
    config.model.depth = args.depth
    config.data.test_num_seg = args.num_seg
    model = initialize.build_model(config)
    variables = jax.tree.map(np.asarray, initialize.scratch_variables(model, 0))
    with tempfile.TemporaryDirectory() as tmp:
        video = args.data or timing.benchmark_video(tmp, "videos")
        model_dir = os.path.join(tmp, "inference")
        baselines = [] if args.baseline in ("none", "unfolded") else [
            (b.partition(":")[0], b.partition(":")[2] or "fp32") for b in args.baseline.split(",")]
        int8 = "int8" in [args.precision] + [p for _, p in baselines]
        export_model(config, variables, model_dir, platforms=("cpu",), onnx=True,
                     calibration=_calibration(tmp, video, config, args) if int8 else None)
        out = {"benchmark": "predict", "depth": args.depth, "num_seg": args.num_seg,
               "views": args.num_seg * 10, "videos": args.videos,
               **time_predict(model_dir, video, args.backend, args.precision, args.videos,
                              args.threads)}
        if args.baseline == "unfolded":
            base_dir = os.path.join(tmp, "inference_unfolded")
            export_model(config, variables, base_dir, platforms=("cpu",), onnx=True,
                         fold_bn=False)
            out.update(time_unfolded(model_dir, base_dir, video, args))
            baselines = []
        for i, (backend, precision) in enumerate(baselines):
            base = time_predict(model_dir, video, backend, precision, args.videos, args.threads)
            speedup = round(base["s_per_video"] / out["s_per_video"], 2)
            if i == 0:
                out["baseline"] = f"{base['backend']}:{base['precision']}"
                out["baseline_s_per_video"] = base["s_per_video"]
                out["speedup_vs_baseline"] = speedup
            else:
                out.setdefault("other_baselines", []).append(
                    {**base, "speedup_vs_baseline": speedup})
    return out


def _calibration(tmp, video, config, args):
    """``--calibration_size`` copies of the benchmark video, as int8 calibration clips."""
    from ppsn.export import clip_meta
    from ppsn.serve import calibration

    list_file = os.path.join(tmp, "calibration.list")
    with open(list_file, "w") as f:
        f.writelines(f"{video} 0\n" for _ in range(args.calibration_size))
    records = calibration.read_records(list_file, "videos", "", config.model.num_classes)
    return calibration.CalibrationClips(clip_meta(config), records, args.calibration_size,
                                        list_file)
