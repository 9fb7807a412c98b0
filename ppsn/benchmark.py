"""Benchmarks. Each prints a final JSON line with its figures.

    python -m ppsn.benchmark pipeline --mode train|valid|test [--data PATH] [--workers N]
        [--num_clips N] [--num_seg N] [--batch_size B]

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
    args = parser.parse_args(argv)
    result = run_pipeline(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
