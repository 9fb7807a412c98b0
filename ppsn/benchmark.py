"""Benchmarks. Each prints a final JSON line with its figures.

    python -m ppsn.benchmark pipeline --mode train|valid|test [--data PATH] [--workers N]
        [--num_clips N] [--num_seg N] [--batch_size B]
    python -m ppsn.benchmark train_step --depth 50 --batch 4 --num_seg 3 --size 224
        [--amp] [--steps N] [--no_baseline] [--teacher_depth 101]
    python -m ppsn.benchmark eval --depth 50 --num_seg 25 [--videos N] [--data PATH]
    python -m ppsn.benchmark predict --backend openvino --precision bf16 [--depth 50]
        [--num_seg 25] [--videos N] [--baseline xla|onnxruntime|openvino:fp32|none]

``train_step`` times the real jitted train step (normalization, mixup, forward, backward,
optimizer) on all local devices and reports ``images_per_s`` (frames through the backbone),
``step_ms``, the XLA-counted FLOPs, ``mfu`` where the device's peak is known and the peak
device memory where the backend reports it. Unless ``--no_baseline``, the same step with XLA's
plain convolution everywhere (``conv_impl='xla'``, the naive Flax port) is timed in the same
process and ``speedup_vs_naive`` reported. ``--teacher_depth D`` also times the ``kd`` step
(plus a frozen ResNet-D teacher's forward) and reports ``kd_step_time_ratio`` against the plain
step of the same run and both optimizer-state sizes (equal: the teacher has none).

``eval`` runs test mode's path for single videos (batch 1): decoding and scaling on the host,
TenCrop, normalization and the model (averaging all ``num_seg x 10`` views) on the device, on
a generated 300-frame 340x256 frames folder (or ``--data``). Reports ``s_per_video`` (host +
device, after one warm-up video) and its host / device parts.

``predict`` times ``ppsn.predict``'s path for one video file (PyAV decoding of the sampled
frames, scaling, TenCrop on the host, then the exported model through ``--backend`` at
``--precision``) with random R50-vd weights exported with ``--onnx``, on a generated 300-frame
340x256 mp4 (or ``--data``), after one warm-up video. Reports ``s_per_video`` and its host / model
parts, and the same for ``--baseline`` (default: the XLA backend) with ``speedup_vs_baseline``.

``pipeline`` runs the host side of the real input pipeline (sampling, decoding of the sampled
frames, transforms, Grain batching, worker processes) on one frames folder (``img_{:05}.jpg``) or
one video file from which clips are drawn repeatedly. Without ``--data`` it generates a 300-frame
340x256 frames folder (``--data_format videos``: a video file) in a temporary directory.
Reported: ``ms_per_clip`` (wall time per clip, all workers together) and
``clips_per_s_per_worker``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


class RepeatedSource:
    """A source that yields the same video ``n`` times (with distinct indices)."""

    def __init__(self, record, n: int):
        self.record, self.n = record, n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return dict(self.record, index=index)


def _benchmark_video(directory: str, data_format: str, num_frames=300, width=340, height=256):
    from ppsn.data import synthetic

    frames = synthetic.render_video(3, num_frames, width, height, np.random.default_rng(0))
    if data_format == "frames":
        path = os.path.join(directory, "frames")
        synthetic.write_frames(path, frames)
    else:
        path = os.path.join(directory, "video.mp4")
        synthetic.write_video(path, frames)
    return path


def _record_for(path: str) -> dict:
    from ppsn.data.decode import VideoFile

    if os.path.isdir(path):
        num_frames = len([n for n in os.listdir(path) if n.startswith("img_")])
        if num_frames == 0:
            raise SystemExit(f"error: {path} holds no img_*.jpg frames")
        return {"video_id": "bench", "label": 0, "frame_dir": path, "num_frames": num_frames}
    with VideoFile(path) as video:
        video.num_frames  # opens and indexes: fails early with a clear error
    return {"video_id": "bench", "label": 0, "video_path": path}


def run_pipeline(args) -> dict:
    from ppsn.data import pipeline
    from ppsn.data.clips import ClipSpec

    num_seg = args.num_seg or (25 if args.mode == "test" else 3)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or _benchmark_video(tmp, args.data_format)
        source = RepeatedSource(_record_for(data), args.num_clips + args.batch_size * 2)
        spec = ClipSpec(args.mode, num_seg, 256, 224)
        if args.mode == "train":
            ds = pipeline.train_dataset(source, spec, args.batch_size, seed=0, num_epochs=1,
                                        process_index=0, process_count=1)
        else:
            ds = pipeline.eval_dataset(source, spec, args.batch_size, process_index=0,
                                       process_count=1)
        it = pipeline.to_iterator(ds, args.workers)
        warm = next(it)  # worker start-up and first batch are not timed
        clips = 0
        start = time.perf_counter()
        while clips < args.num_clips:
            batch = next(it)
            clips += len(batch["label"])
        elapsed = time.perf_counter() - start
    ms = elapsed / clips * 1e3
    return {"benchmark": "pipeline", "mode": args.mode, "num_seg": num_seg,
            "views_per_clip": spec.views, "batch_shape": list(warm["frames"].shape),
            "data": args.data or f"generated 300-frame 340x256 {args.data_format}",
            "workers": args.workers, "clips": clips, "ms_per_clip": round(ms, 3),
            "clips_per_s_per_worker": round(1e3 / ms / max(1, args.workers), 2)}


# Dense peak FLOP/s by device kind (for MFU), from the vendors' data sheets.
PEAK_FLOPS = {
    "NVIDIA H100 80GB HBM3": {"bf16": 989e12, "fp32": 67e12},
    "NVIDIA H100": {"bf16": 989e12, "fp32": 67e12},
    "NVIDIA H200": {"bf16": 989e12, "fp32": 67e12},
    "NVIDIA A100-SXM4-80GB": {"bf16": 312e12, "fp32": 19.5e12},
    "TPU v4": {"bf16": 275e12, "fp32": 275e12 / 4},
    "TPU v5 lite": {"bf16": 197e12, "fp32": 197e12 / 4},
}


def _time_train_step(args, conv_impl: str, teacher_depth: int = 0) -> dict:
    import jax

    from ppsn import parallel
    from ppsn.models import TSN
    from ppsn.recipe import pptsn_config
    from ppsn.train import optim, steps

    config = pptsn_config()
    dtype = jax.numpy.bfloat16 if args.amp else jax.numpy.float32
    model = TSN(depth=args.depth, num_classes=400, dtype=dtype, conv_impl=conv_impl)
    dummy = jax.numpy.zeros((1, 1, 32, 32, 3), jax.numpy.float32)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), dummy)
    tx = optim.make_optimizer(config.optim, variables["params"], 100, 1000)
    mesh = parallel.make_mesh(jax.local_devices())
    rep = parallel.replicated(mesh)
    extra = ()
    if teacher_depth:  # kd: a frozen teacher as one more (replicated, not donated) argument
        teacher = TSN(depth=teacher_depth, num_classes=400, dtype=dtype, conv_impl=conv_impl)
        extra = (jax.device_put(jax.jit(teacher.init)(jax.random.PRNGKey(1), dummy), rep),)
        cfg = steps.StepConfig(model, tx, optim.make_schedule(config.optim, 100, 1000), 400,
                               distill_mode="kd", teacher=teacher, temperature=4.0)
    else:
        cfg = steps.StepConfig(model, tx, optim.make_schedule(config.optim, 100, 1000), 400)
    train = jax.jit(lambda s, b, r, *t: steps.train_step(cfg, s, b, r, *t),
                    in_shardings=(rep, parallel.batch_sharded(mesh), rep) + (rep,) * len(extra),
                    out_shardings=(rep, rep), donate_argnums=0)
    state = jax.device_put(steps.create_state(variables, tx), rep)
    rng = jax.device_put(jax.random.PRNGKey(0), parallel.replicated(mesh))
    global_batch = args.batch * mesh.devices.size
    data = np.random.default_rng(0)
    batch = parallel.to_global({
        "frames": data.integers(0, 256, (global_batch, args.num_seg, args.size, args.size, 3),
                                dtype=np.uint8),
        "label": data.integers(0, 400, global_batch).astype(np.int32)}, mesh)
    start = time.perf_counter()
    compiled = train.lower(state, batch, rng, *extra).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    for _ in range(args.warmup):
        state, metrics = compiled(state, batch, rng, *extra)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = compiled(state, batch, rng, *extra)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - start) / args.steps
    images = global_batch * args.num_seg
    out = {"conv_impl": conv_impl, "step_ms": round(step_s * 1e3, 1),
           "images_per_s": round(images / step_s, 2), "compile_s": round(compile_s, 1),
           "flops_per_step": flops,
           "optimizer_state_bytes": sum(x.nbytes for x in jax.tree.leaves(state.opt_state))}
    device = jax.local_devices()[0]
    peak = PEAK_FLOPS.get(device.device_kind, {}).get("bf16" if args.amp else "fp32")
    if peak and flops:
        out["mfu"] = round(flops / step_s / (peak * mesh.devices.size), 4)
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        out["peak_memory_gib"] = round(stats["peak_bytes_in_use"] / 2**30, 2)
    return out


def run_train_step(args) -> dict:
    import jax

    result = _time_train_step(args, "auto")
    out = {"benchmark": "train_step", "depth": args.depth, "batch_per_device": args.batch,
           "num_seg": args.num_seg, "size": args.size, "precision": "bf16" if args.amp else "fp32",
           "devices": jax.local_device_count(), "device": jax.local_devices()[0].device_kind,
           **result}
    if args.teacher_depth:
        kd = _time_train_step(args, "auto", args.teacher_depth)
        out["teacher_depth"] = args.teacher_depth
        out["kd_step_ms"] = kd["step_ms"]
        out["kd_images_per_s"] = kd["images_per_s"]
        out["kd_step_time_ratio"] = round(kd["step_ms"] / result["step_ms"], 3)
        out["kd_optimizer_state_bytes"] = kd["optimizer_state_bytes"]  # == plain training's
    if not args.no_baseline:
        base = _time_train_step(args, "xla")
        out["naive_images_per_s"] = base["images_per_s"]
        out["speedup_vs_naive"] = round(result["images_per_s"] / base["images_per_s"], 2)
    return out


def run_eval(args) -> dict:
    import jax

    from ppsn import parallel
    from ppsn.data import pipeline
    from ppsn.data.clips import ClipSpec
    from ppsn.evaluate import score_fn
    from ppsn.models import TSN

    model = TSN(depth=args.depth, num_classes=400)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0),
                                    jax.numpy.zeros((1, 1, 32, 32, 3), jax.numpy.float32))
    mesh = parallel.make_mesh(jax.local_devices()[:1])
    spec = ClipSpec("test", args.num_seg, 256, 224, device_crops=True, canvas=456)
    score = score_fn(model, mesh, spec, args.views_per_chunk)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or _benchmark_video(tmp, "frames")
        source = RepeatedSource(_record_for(data), args.videos + 1)
        ds = pipeline.eval_dataset(source, spec, 1, process_index=0, process_count=1)
        host = device = 0.0
        for i in range(len(ds)):
            t0 = time.perf_counter()
            batch = ds[i]
            t1 = time.perf_counter()
            out = score(variables, parallel.to_global(
                {"frames": batch["frames"], "hw": batch["hw"]}, mesh))
            jax.block_until_ready(out)
            t2 = time.perf_counter()
            if i > 0:  # the first video compiles
                host += t1 - t0
                device += t2 - t1
    n = args.videos
    return {"benchmark": "eval", "depth": args.depth, "num_seg": args.num_seg,
            "views": spec.views, "views_per_chunk": args.views_per_chunk, "videos": n, "device": jax.local_devices()[0].device_kind,
            "host_s_per_video": round(host / n, 3), "device_s_per_video": round(device / n, 3),
            "s_per_video": round((host + device) / n, 3),
            "ms_per_view": round(device / n / spec.views * 1e3, 2)}


def _time_predict(model_dir, video, backend, precision, videos, threads) -> dict:
    from ppsn.predict import Predictor

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
    assert np.all(np.isfinite(scores))
    return {"backend": backend, "precision": precision, "host_s_per_video": round(host / videos, 3),
            "model_s_per_video": round(model / videos, 3),
            "s_per_video": round((host + model) / videos, 3),
            "ms_per_view": round(model / videos / clip.shape[0] * 1e3, 2)}


def run_predict(args) -> dict:
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
        video = args.data or _benchmark_video(tmp, "videos")
        model_dir = os.path.join(tmp, "inference")
        export_model(config, variables, model_dir, platforms=("cpu",), onnx=True)
        out = {"benchmark": "predict", "depth": args.depth, "num_seg": args.num_seg,
               "views": args.num_seg * 10, "videos": args.videos,
               **_time_predict(model_dir, video, args.backend, args.precision, args.videos,
                               args.threads)}
        if args.baseline != "none":
            backend, _, precision = args.baseline.partition(":")
            base = _time_predict(model_dir, video, backend, precision or "fp32", args.videos,
                                 args.threads)
            out["baseline"] = f"{base['backend']}:{base['precision']}"
            out["baseline_s_per_video"] = base["s_per_video"]
            out["speedup_vs_baseline"] = round(base["s_per_video"] / out["s_per_video"], 2)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppsn.benchmark", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pipeline", help="host input pipeline throughput")
    p.add_argument("--mode", choices=("train", "valid", "test"), default="train")
    p.add_argument("--data", default=None, help="a frames folder or a video file")
    p.add_argument("--data_format", choices=("frames", "videos"), default="frames",
                   help="what to generate when --data is not given")
    p.add_argument("--workers", type=int, default=0, help="Grain worker processes (0: in process)")
    p.add_argument("--num_clips", type=int, default=200)
    p.add_argument("--num_seg", type=int, default=None, help="default 3 (train/valid), 25 (test)")
    p.add_argument("--batch_size", type=int, default=8)
    t = sub.add_parser("train_step", help="jitted train step throughput")
    t.add_argument("--depth", type=int, default=50)
    t.add_argument("--batch", type=int, default=4, help="clips per device")
    t.add_argument("--num_seg", type=int, default=3)
    t.add_argument("--size", type=int, default=224)
    t.add_argument("--amp", action="store_true", help="bf16 compute")
    t.add_argument("--steps", type=int, default=5)
    t.add_argument("--warmup", type=int, default=1)
    t.add_argument("--no_baseline", action="store_true", help="skip the naive-convolution run")
    t.add_argument("--teacher_depth", type=int, default=0,
                   help="also time kd distillation from a frozen teacher of this depth (the "
                   "overhead is reported as kd_step_time_ratio)")
    e = sub.add_parser("eval", help="TenCrop test time per video (host + device)")
    e.add_argument("--depth", type=int, default=50)
    e.add_argument("--num_seg", type=int, default=25)
    e.add_argument("--videos", type=int, default=2)
    e.add_argument("--data", default=None, help="a frames folder or a video file")
    e.add_argument("--views_per_chunk", type=int, default=10, help="0: all views at once")
    r = sub.add_parser("predict", help="ppsn.predict time per video file (decode + TenCrop + "
                       "model) through a serving backend")
    r.add_argument("--backend", choices=("xla", "onnxruntime", "openvino"), default="openvino")
    r.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    r.add_argument("--depth", type=int, default=50)
    r.add_argument("--num_seg", type=int, default=25)
    r.add_argument("--videos", type=int, default=2)
    r.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    r.add_argument("--data", default=None, help="a video file (default: a generated one)")
    r.add_argument("--baseline", default="xla",
                   help="backend[:precision] timed in the same run for speedup_vs_baseline, "
                   "or 'none'")
    args = parser.parse_args(argv)
    runners = {"pipeline": run_pipeline, "train_step": run_train_step, "eval": run_eval,
               "predict": run_predict}
    result = runners[args.command](args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
