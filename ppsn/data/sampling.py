"""Segment sampling: which frames of a video a clip is made of (0-based indices).

PaddleVideo's ``Sampler`` (``seg_len=1``, ``select_left=True``), reproduced exactly:

* ``valid`` / ``test``: the middle of each of ``num_seg`` equal segments,
  ``int(frames_len / num_seg / 2 + frames_len / num_seg * i)`` (float division, truncation);
* ``train``: a uniformly random frame inside each segment of integer length
  ``avg = frames_len // num_seg``: ``i * avg + U{0..avg-1}``; the last ``frames_len % num_seg``
  frames are never drawn;
* ``linspace``: ``int(linspace(0, frames_len - 1, num_seg))``, PaddleVideo's test-time sampling
  for videos (``linspace_sample=True``).

Short videos. PaddleVideo fails when ``frames_len <= num_seg`` in valid/test mode and when
``frames_len < num_seg`` in train mode (it formats a float index into the file name and silently
retries another video). ppsn instead **repeats frames**: segment ``i`` takes frame
``i * frames_len // num_seg``, so every frame is used, in order, each about
``num_seg / frames_len`` times (3 frames, 8 segments -> 0 0 0 1 1 1 2 2). It never fails for
``frames_len >= 1``.
"""

from __future__ import annotations

import numpy as np

MODES = ("train", "valid", "test", "linspace")


def _repeat_frames(frames_len: int, num_seg: int) -> np.ndarray:
    return (np.arange(num_seg, dtype=np.int64) * frames_len) // num_seg


def sample_segments(frames_len: int, num_seg: int, mode: str,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """0-based frame indices, one per segment (int64 array of length ``num_seg``).

    ``rng`` (a ``numpy.random.Generator``) is required in ``train`` mode and unused otherwise.
    """
    frames_len, num_seg = int(frames_len), int(num_seg)
    if frames_len < 1:
        raise ValueError(f"cannot sample from a video with {frames_len} frames")
    if num_seg < 1:
        raise ValueError(f"num_seg must be >= 1, got {num_seg}")
    if mode == "linspace":
        offsets = np.linspace(0, frames_len - 1, num_seg)
        return np.clip(offsets, 0, frames_len - 1).astype(np.int64)
    if mode in ("valid", "test"):
        if frames_len <= num_seg:
            return _repeat_frames(frames_len, num_seg)
        seg = frames_len / num_seg
        return np.array([int(seg / 2 + seg * i) for i in range(num_seg)], dtype=np.int64)
    if mode == "train":
        if rng is None:
            raise ValueError("train-mode sampling needs an rng (numpy.random.Generator)")
        avg = frames_len // num_seg
        if avg == 0:
            return _repeat_frames(frames_len, num_seg)
        return np.arange(num_seg, dtype=np.int64) * avg + rng.integers(0, avg, size=num_seg)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
