"""Scores for video files from an exported model: test-mode sampling and TenCrop, then a backend."""

from __future__ import annotations

import numpy as np

from ppsn.serve import artifact, backends


def clip_spec(meta: dict):
    """How the export's clips are made (test-mode sampling, scale, TenCrop on the host)."""
    from ppsn.data.clips import ClipSpec

    return ClipSpec("test", meta["num_seg"], meta["short_size"], meta["target_size"],
                    sampling=meta["sampling"])


def load_clip(meta: dict, record: dict) -> np.ndarray:
    """uint8 ``[views, size, size, 3]`` for one list record (``video_path``, or ``frame_dir``
    + ``num_frames``) as predict makes it for the export ``meta`` (raises DecodeError)."""
    from ppsn.data import clips

    return clips.load_clip(record, clip_spec(meta))


class Predictor:
    """The exported model in ``model_dir``, run by one backend (:mod:`ppsn.serve.backends`),
    plus its preprocessing (PyAV decoding of the sampled frames, scale, TenCrop on the host)."""

    def __init__(self, model_dir: str, backend: str = "xla", precision: str = "fp32",
                 threads: int = 0):
        self.model_dir = model_dir = artifact.local_copy(model_dir)
        self.meta = artifact.read_meta(model_dir)
        self.runner = backends.load(model_dir, backend, precision, threads)

    def clip(self, path: str) -> np.ndarray:
        """uint8 ``[views, size, size, 3]`` for one video file (raises DecodeError)."""
        return load_clip(self.meta, {"video_path": path})

    def scores(self, clips: np.ndarray) -> np.ndarray:
        """Class probabilities ``[n, classes]`` for uint8 clips ``[n, views, size, size, 3]``."""
        return self.runner.scores(clips)
