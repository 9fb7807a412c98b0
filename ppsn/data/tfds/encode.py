"""One video to what a prepared dataset stores (the job ``python -m ppsn.data.prepare`` runs in
its worker processes).

* ``frames`` config: every frame as an encoded image. A frame folder's files are kept byte for
  byte (they are what PaddleVideo reads, so clips stay bit-identical to the list-file source);
  each must decode, and all to the same size. Frames of a video file are decoded one at a time,
  scaled to a short side of 256 (PaddleVideo's rawframes) and JPEG-encoded at quality 95.
* ``videos`` config: the video file's bytes, after checking that it opens and its last frame
  decodes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ppsn.data import decode, transforms
from ppsn.data.tfds.base import Entry

FRAME_SHORT_SIDE = 256
JPEG_QUALITY = 95


@dataclasses.dataclass
class Encoded:
    """What is written for one video: ``images`` (frames config) or ``video`` (videos)."""

    num_frames: int
    images: list[bytes] | None = None
    video: bytes | None = None


def encode_jpeg(frame: np.ndarray, name: str) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise decode.DecodeError(name, "JPEG encoding failed")
    return data.tobytes()


def _frames_of_video(path: str) -> list[bytes]:
    out = []
    with decode.VideoFile(path) as video:
        for i, frame in enumerate(video.frames()):
            scaled = transforms.scale(frame[None], FRAME_SHORT_SIDE)[0]
            out.append(encode_jpeg(scaled, f"{path}[frame {i}]"))
    return out


def _frames_of_folder(entry: Entry) -> list[bytes]:
    out, first_shape = [], None
    for i in range(entry.num_frames):
        try:
            data = decode.read_frame_bytes(entry.frame_dir, i)
        except decode.DecodeError as e:
            raise decode.DecodeError(e.path, f"{e.reason} (list says {entry.num_frames} frames)") from None
        path = decode.frame_path(entry.frame_dir, i)
        shape = decode.decode_jpeg(data, path).shape
        first_shape = first_shape or shape
        if shape != first_shape:
            raise decode.DecodeError(path, f"frames of different sizes: this frame is "
                                           f"{shape[1]}x{shape[0]}, the first "
                                           f"{first_shape[1]}x{first_shape[0]}")
        out.append(data)
    return out


def encode_entry(entry: Entry, config: str) -> Encoded:
    """Entry -> what is written. Raises ``DecodeError`` (or ``OSError``) for unusable input."""
    if config == "frames":
        images = _frames_of_video(entry.video_path) if entry.video_path else _frames_of_folder(entry)
        return Encoded(len(images), images=images)
    if entry.video_path is None:
        raise decode.DecodeError(entry.path, "the videos config needs video files, got a frame folder")
    with open(entry.video_path, "rb") as f:
        data = f.read()
    with decode.VideoFile(data, name=entry.video_path) as video:
        video.get([video.num_frames - 1])  # it opens, indexes and decodes to its end
        num_frames = video.num_frames
    return Encoded(num_frames, video=data)


def encode_or_reason(entry: Entry, config: str) -> tuple[Encoded | None, str, str]:
    """``(encoded, '', '')``, or ``(None, file, reason)`` naming the file that failed."""
    try:
        return encode_entry(entry, config), "", ""
    except decode.DecodeError as e:
        return None, e.path, e.reason
    except OSError as e:
        return None, getattr(e, "filename", None) or entry.path, f"unreadable ({e.strerror or e})"
