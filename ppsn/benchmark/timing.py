"""What the benchmarks share: generated benchmark videos, a repeated source, timing of calls."""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np


class RepeatedSource:
    """A source of ``n`` records cycling over ``source``'s (a record or a source), with
    distinct indices."""

    def __init__(self, source, n: int):
        self.source = [source] if isinstance(source, dict) else source
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return dict(self.source[index % len(self.source)], index=index)


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


def h264_video(directory: str, gop: int, seconds: int = 10, width: int = 340, height: int = 256,
               fps: int = 25) -> str:
    """A generated toy video as h264 (libx264, B-frames) with a keyframe every ``gop`` frames
    and no others (scene-cut keyframes off)."""
    import av

    from ppsn.data import toy

    frames = toy.render_video(3, seconds * fps, width, height, np.random.default_rng(0))
    path = os.path.join(directory, f"gop{gop}.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``), for the record of a figure."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.processor() or "unknown"


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
