"""Scores for video files from an exported model: test-mode sampling and TenCrop, then a backend."""

from __future__ import annotations

import numpy as np

from ppsn.serve import artifact, backends


class Predictor:
    """The exported model in ``model_dir``, run by one backend (:mod:`ppsn.serve.backends`),
    plus its preprocessing (PyAV decoding of the sampled frames, scale, TenCrop on the host)."""

    def __init__(self, model_dir: str, backend: str = "xla", precision: str = "fp32",
                 threads: int = 0):
        model_dir = artifact.local_copy(model_dir)
        self.meta = artifact.read_meta(model_dir)
        self.runner = backends.load(model_dir, backend, precision, threads)

    def clip(self, path: str) -> np.ndarray:
        """uint8 ``[views, size, size, 3]`` for one video file (raises DecodeError)."""
        from ppsn.data import decode, sampling, transforms

        m = self.meta
        with decode.VideoFile(path) as video:
            frames = video.get(sampling.sample_segments(video.num_frames, m["num_seg"],
                                                        m["sampling"]))
        return transforms.ten_crop(transforms.scale(frames, m["short_size"]), m["target_size"])

    def scores(self, clips: np.ndarray) -> np.ndarray:
        """Class probabilities ``[n, classes]`` for uint8 clips ``[n, views, size, size, 3]``."""
        return self.runner.scores(clips)
