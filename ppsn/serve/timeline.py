"""Class scores over time for a long video: consecutive windows, each classified as one video.

A window of ``window_seconds`` starts every ``stride_seconds`` (default: the window, so windows
are consecutive) while it fits in the video; inside each window the frames are sampled exactly
as the exported model expects of a whole video (``num_seg`` segments, the export's sampling,
scale, TenCrop). The video is decoded once, front to back (:meth:`VideoFile.frames`): a decoded
frame is kept (scaled) only while an open window still needs it, and a window is scored as
soon as its last sampled frame is decoded, so memory stays flat with the video's length.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator

import numpy as np

from ppsn import cli


@dataclasses.dataclass(frozen=True)
class Window:
    start: int  # first frame (0-based)
    end: int  # one past its last frame
    indices: np.ndarray  # the sampled frames (absolute, 0-based, in segment order)


class ShortVideo(cli.UserError):
    """The video is shorter than one window."""


def plan_windows(num_frames: int, fps: float, window_seconds: float, stride_seconds: float,
                 num_seg: int, sampling: str, name: str = "video") -> list[Window]:
    """The windows over a ``num_frames`` video at ``fps``; a video shorter than one window is a
    :class:`ShortVideo` naming ``name``."""
    from ppsn.data import sampling as sampler

    size, stride = max(1, round(window_seconds * fps)), max(1, round(stride_seconds * fps))
    if num_frames < size:
        raise ShortVideo(f"{name}: {num_frames / fps:.2f} s ({num_frames} frames at {fps:g} fps) "
                         f"is shorter than one window (--window_seconds={window_seconds:g})")
    offsets = sampler.sample_segments(size, num_seg, sampling)
    return [Window(start, start + size, start + offsets)
            for start in range(0, num_frames - size + 1, stride)]


def window_clips(frames: Iterable[np.ndarray], windows: list[Window], short_size: int,
                 target_size: int) -> Iterator[tuple[Window, np.ndarray]]:
    """``(window, uint8 TenCrop clip [views, size, size, 3])`` in window order, from the
    video's frames in order; decoding stops after the last window's last frame."""
    from ppsn.data import transforms

    wanted: dict[int, list[int]] = {}
    for w, window in enumerate(windows):
        for i in set(window.indices.tolist()):
            wanted.setdefault(i, []).append(w)
    held: dict[int, dict[int, np.ndarray]] = {}  # open windows' scaled frames
    done = 0
    for index, frame in enumerate(frames):
        if index in wanted:
            scaled = transforms.scale(frame[None], short_size)[0]
            for w in wanted.pop(index):
                held.setdefault(w, {})[index] = scaled
        while done < len(windows) and windows[done].indices.max() <= index:
            got = held.pop(done)
            clip = np.stack([got[int(i)] for i in windows[done].indices])
            yield windows[done], transforms.ten_crop(clip, target_size)
            done += 1
        if done == len(windows):
            return


def timeline(predictor, path: str, window_seconds: float, stride_seconds: float,
             top_k: int, names: dict | None = None) -> dict:
    """``{"video", "fps", "window_seconds", "stride_seconds", "windows": [{"start_s", "end_s",
    "top_k": [[class, score], ...]}]}`` (class: its name from ``names``, else its id)."""
    from ppsn.data import decode

    m = predictor.meta
    names = names or {}
    with decode.VideoFile(path) as video:
        fps = video.fps
        windows = plan_windows(video.num_frames, fps, window_seconds, stride_seconds,
                               m["num_seg"], m["sampling"], path)
        out = []
        for window, clip in window_clips(video.frames(), windows, m["short_size"],
                                         m["target_size"]):
            scores = predictor.scores(clip[None])[0]
            order = np.argsort(-scores, kind="stable")[:max(1, top_k)]
            out.append({"start_s": round(window.start / fps, 3),
                        "end_s": round(window.end / fps, 3),
                        "top_k": [[names.get(int(c), int(c)), float(scores[c])] for c in order]})
    return {"video": str(path), "fps": fps, "window_seconds": window_seconds,
            "stride_seconds": stride_seconds, "windows": out}


def plot(result: dict, file, classes: int = 5) -> None:
    """A PNG of the scores over time of the ``classes`` classes with the highest peak score
    (each window's score drawn at its middle; classes missing from a window's top-k at 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = result["windows"]
    middles = [(w["start_s"] + w["end_s"]) / 2 for w in windows]
    peaks: dict = {}
    for w in windows:
        for c, s in w["top_k"]:
            peaks[c] = max(peaks.get(c, 0.0), s)
    top = sorted(peaks, key=lambda c: -peaks[c])[:classes]
    fig, ax = plt.subplots(figsize=(10, 4))
    for c in top:
        ax.plot(middles, [dict(map(tuple, w["top_k"])).get(c, 0.0) for w in windows],
                marker="o", label=str(c))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1)
    ax.set_title(f"{result['video']}: {result['window_seconds']:g} s windows")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(file, dpi=80, format="png")
    plt.close(fig)
