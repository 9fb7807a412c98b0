"""``pipeline``: the host side of the real input pipeline, as training / validation / test mode
run it (sampling, decoding of the sampled frames, host transforms, Grain batching, worker
processes), on one frames folder (``img_{:05}.jpg``) or one video file from which clips are
drawn repeatedly. Without ``--data`` it generates a 300-frame 340x256 frames folder
(``--data_format videos``: an mp4) in a temporary directory. The clip spec is the recipe's
(``pipeline.clip_spec``): test mode hands the device scaled frames on a canvas and the device
cuts the TenCrop views, so the test figure is the host part of test mode.

Reported: ``ms_per_clip`` (wall time per clip, all workers together) and
``clips_per_s_per_worker``.
"""

from __future__ import annotations

import tempfile
import time

from ppsn.benchmark import timing


def add_parser(sub):
    p = sub.add_parser("pipeline", help="host input pipeline throughput")
    p.add_argument("--mode", choices=("train", "valid", "test"), default="train")
    p.add_argument("--data", default=None, help="a frames folder or a video file")
    p.add_argument("--data_format", choices=("frames", "videos"), default="frames",
                   help="what to generate when --data is not given")
    p.add_argument("--workers", type=int, default=0, help="Grain worker processes (0: in process)")
    p.add_argument("--num_clips", type=int, default=200)
    p.add_argument("--num_seg", type=int, default=None, help="default 3 (train/valid), 25 (test)")
    p.add_argument("--batch_size", type=int, default=8)
    return p


def run(args) -> dict:
    from ppsn.data import pipeline
    from ppsn.recipe import pptsn_config

    data_cfg = pptsn_config().data
    if args.num_seg:
        data_cfg.num_seg = data_cfg.test_num_seg = args.num_seg
    spec = pipeline.clip_spec(data_cfg, args.mode)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or timing.benchmark_video(tmp, args.data_format)
        source = timing.RepeatedSource(timing.record_for(data),
                                       args.num_clips + args.batch_size * 2)
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
    return {"benchmark": "pipeline", "mode": args.mode, "num_seg": spec.num_seg,
            "views_per_clip": spec.views, "batch_shape": list(warm["frames"].shape),
            "device_crops": spec.device_crops,
            "data": args.data or f"generated 300-frame 340x256 {args.data_format}",
            "workers": args.workers, "clips": clips, "ms_per_clip": round(ms, 3),
            "clips_per_s_per_worker": round(1e3 / ms / max(1, args.workers), 2)}
