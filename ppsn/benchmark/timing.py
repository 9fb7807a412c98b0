"""What the benchmarks share: a generated benchmark video, a repeated source, timing of calls."""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np


class RepeatedSource:
    """A source that yields the same video ``n`` times (with distinct indices)."""

    def __init__(self, record, n: int):
        self.record, self.n = record, n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return dict(self.record, index=index)


def benchmark_video(directory: str, data_format: str, num_frames=300, width=340, height=256
                    ) -> str:
    """A generated toy video (``frames``: a folder of JPEGs; ``videos``: an mp4) in ``directory``."""
    from ppsn.data import toy

    frames = toy.render_video(3, num_frames, width, height, np.random.default_rng(0))
    if data_format == "frames":
        path = os.path.join(directory, "frames")
        toy.write_frames(path, frames)
    else:
        path = os.path.join(directory, "video.mp4")
        toy.write_video(path, frames)
    return path


def record_for(path: str) -> dict:
    """A source record for a frames folder or a video file (fails early with a clear error)."""
    from ppsn.data.decode import VideoFile

    if os.path.isdir(path):
        num_frames = len([n for n in os.listdir(path) if n.startswith("img_")])
        if num_frames == 0:
            raise SystemExit(f"error: {path} holds no img_*.jpg frames")
        return {"video_id": "bench", "label": 0, "frame_dir": path, "num_frames": num_frames}
    with VideoFile(path) as video:
        video.num_frames  # opens and indexes the file
    return {"video_id": "bench", "label": 0, "video_path": path}


def seconds_per_call(fn: Callable[[], object], calls: int, warmup: int = 1) -> float:
    """Mean wall seconds of ``fn()`` over ``calls`` calls after ``warmup`` untimed ones; jax
    results are waited for (``block_until_ready``) so asynchronous dispatch is timed whole."""
    import jax

    out = None
    for _ in range(warmup):
        out = fn()
    jax.block_until_ready(out)
    start = time.perf_counter()
    for _ in range(calls):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / calls
