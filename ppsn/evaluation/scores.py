"""``scores.npz``: each video's averaged class scores from one test run, for fusion.

Arrays: ``video_id`` (str [N]), ``label`` (int64 [N]), ``scores`` (float32 [N, classes], the
softmax averaged over the video's views; NaN rows for videos that were not scored), ``failed``
(bool [N], videos that could not be decoded), and 0-d strings ``model`` (the checkpoint),
``list`` (the list file) and ``list_sha256`` (its fingerprint, '' when the source has none).
Written and read through :mod:`ppsn.paths` (local or ``gs://``).
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np

from ppsn import paths

SCORES_FILE = "scores.npz"


@dataclasses.dataclass(frozen=True)
class RunScores:
    """One run's per-video scores."""

    video_id: np.ndarray
    label: np.ndarray
    scores: np.ndarray
    failed: np.ndarray
    model: str
    list: str
    list_sha256: str

    @property
    def num_classes(self) -> int:
        return int(self.scores.shape[1])


def write(directory: str, run: RunScores) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, video_id=np.asarray(run.video_id, str), label=np.asarray(run.label, np.int64),
             scores=np.asarray(run.scores, np.float32), failed=np.asarray(run.failed, bool),
             model=np.asarray(run.model), list=np.asarray(run.list),
             list_sha256=np.asarray(run.list_sha256 or ""))
    paths.path(paths.join(directory, SCORES_FILE)).write_bytes(buffer.getvalue())


def read(directory: str) -> RunScores:
    """The scores of the run in ``directory`` (a test mode output directory)."""
    data = paths.path(paths.join(directory, SCORES_FILE)).read_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return RunScores(video_id=z["video_id"], label=z["label"], scores=z["scores"],
                         failed=z["failed"], model=str(z["model"]), list=str(z["list"]),
                         list_sha256=str(z["list_sha256"]))
