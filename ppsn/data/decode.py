"""Decoding of only the sampled frames: JPEG frame folders / JPEG bytes, and video files.

* Frames format: ``frame_dir/img_{:05}.jpg`` (1-based on disk; the functions here take 0-based
  indices) or a list of JPEG bytes from a TFDS record. Decoded with OpenCV (libjpeg-turbo),
  pixel-identical to PaddleVideo's ``PIL.Image.open(p).convert('RGB')`` for ordinary JPEGs;
  grayscale and CMYK JPEGs come out as RGB too.
* Videos (mp4, avi, webm, mkv, ... anything FFmpeg reads) through PyAV. The container is demuxed
  once (packets only, no decoding) to learn the frame count and where the keyframes are; each
  requested frame is then reached by seeking to the keyframe before it and decoding forward from
  there, never from the start of the file.

Every failure is a :class:`DecodeError` naming the file (for frames: the frame file, or the
record and frame number) and the reason, so that pipelines can count, log and replace the
sample. Reasons are plain text: no Python object reprs.

Library threads: :func:`set_threads` caps OpenCV's pool and FFmpeg's decoder threads in this
process (the input pipeline calls it in each worker process: see ``ppsn.data.loading``).
"""

from __future__ import annotations

import bisect
import io
import os
import re
from typing import Iterator, Sequence

import cv2
import numpy as np

from ppsn import paths

FRAME_SUFFIX = "img_{:05}.jpg"
# Video files a folder listing takes (predict on a directory, the K400 official layout).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".flv", ".m4v", ".mpg", ".mpeg")


_THREADS: int | None = None  # FFmpeg decoder threads; None: FFmpeg's default


def set_threads(count: int) -> None:
    """Use ``count`` library threads per decode in this process: OpenCV's pool (resize, colour
    conversion) and FFmpeg's video decoder. 1 in worker processes avoids W workers x N cores
    threads on N cores."""
    global _THREADS
    cv2.setNumThreads(int(count))
    _THREADS = int(count)


class DecodeError(Exception):
    """A sample could not be decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


# ---------------------------------------------------------------------------------------- JPEG


def decode_jpeg(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """JPEG (or PNG) bytes -> uint8 RGB ``[H, W, 3]``."""
    if not data:
        raise DecodeError(name, "empty image file")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        image = _decode_with_pil(data, name)  # formats OpenCV refuses (rare CMYK variants)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def _decode_with_pil(data: bytes, name: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except UnidentifiedImageError:
        raise DecodeError(name, "corrupt or unsupported image (not a JPEG or PNG that "
                                "OpenCV or PIL can read)") from None
    except (OSError, ValueError) as e:
        raise DecodeError(name, f"corrupt or unsupported image ({_plain(e)})") from None


def _size(frame: np.ndarray) -> str:
    return f"{frame.shape[1]}x{frame.shape[0]}"


def _stack(frames: list[np.ndarray], names: list[str]) -> np.ndarray:
    """Stack decoded frames; a frame whose size differs from the first one's is a
    :class:`DecodeError` naming that frame (``names[i]`` names ``frames[i]``)."""
    for frame, name in zip(frames, names):
        if frame.shape != frames[0].shape:
            raise DecodeError(name, f"frames of different sizes: this frame is {_size(frame)}, "
                                    f"the clip's first sampled frame {_size(frames[0])}")
    return np.stack(frames)


def frame_path(frame_dir: str, index: int, suffix: str = FRAME_SUFFIX) -> str:
    """The file of 0-based frame ``index`` in a frame folder (1-based names on disk)."""
    return paths.join(frame_dir, suffix.format(int(index) + 1))


def read_frame_bytes(frame_dir: str, index: int, suffix: str = FRAME_SUFFIX) -> bytes:
    """The encoded bytes of 0-based frame ``index``; a missing or unreadable file is a
    :class:`DecodeError` naming that file."""
    path = frame_path(frame_dir, index, suffix)
    try:
        if paths.is_remote(path):
            return paths.path(path).read_bytes()
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise DecodeError(path, "missing frame file") from None
    except OSError as e:
        raise DecodeError(path, f"unreadable frame file ({e.strerror or e})") from None


def read_frame_files(frame_dir: str, indices: Sequence[int], suffix: str = FRAME_SUFFIX
                     ) -> np.ndarray:
    """Decode the 0-based frames ``indices`` of a frame folder -> ``[T, H, W, 3]`` (each distinct
    frame read once)."""
    cache: dict[int, np.ndarray] = {}
    for i in indices:
        i = int(i)
        if i not in cache:
            cache[i] = decode_jpeg(read_frame_bytes(frame_dir, i, suffix),
                                   frame_path(frame_dir, i, suffix))
    return _stack([cache[int(i)] for i in indices],
                  [frame_path(frame_dir, i, suffix) for i in indices])


def decode_jpeg_frames(jpegs: Sequence[bytes], indices: Sequence[int], name: str) -> np.ndarray:
    """Decode the 0-based ``indices`` of a sequence of JPEG bytes -> ``[T, H, W, 3]``. ``jpegs``
    is any sequence (a list, or a prepared TFDS video whose frames are read on access): only
    the requested frames are read, each once."""
    cache: dict[int, np.ndarray] = {}
    for i in indices:
        i = int(i)
        if i not in cache:
            if not 0 <= i < len(jpegs):
                raise DecodeError(name, f"frame {i} requested but the record has {len(jpegs)}")
            cache[i] = decode_jpeg(jpegs[i], f"{name}[frame {i}]")
    return _stack([cache[int(i)] for i in indices], [f"{name}[frame {int(i)}]" for i in indices])


# --------------------------------------------------------------------------------------- video


class VideoFile:
    """A video opened for random access to frames by index.

    ``source`` is a path or the encoded bytes (``name`` then names it in errors). The frame
    count is the number of video packets (what PaddleVideo's decode-everything loader yields).
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, source: str | bytes, name: str | None = None):
        import av

        self.name = name or (source if isinstance(source, str) else "<video bytes>")
        if isinstance(source, str) and paths.is_remote(source):  # demuxed whole anyway
            try:
                source = paths.path(source).read_bytes()
            except FileNotFoundError:
                raise DecodeError(self.name, "missing video file") from None
            except OSError as e:
                raise DecodeError(self.name, f"unreadable video file ({_plain(e)})") from None
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise DecodeError(self.name, "empty video (0 bytes)")
            handle = io.BytesIO(source)
        else:
            if not os.path.exists(source):
                raise DecodeError(self.name, "missing video file")
            if os.path.getsize(source) == 0:
                raise DecodeError(self.name, "empty video file (0 bytes)")
            handle = source
        try:
            self._container = av.open(handle)
        except Exception as e:  # av.error.* and OSError
            raise DecodeError(self.name, f"cannot open video ({_why(e)})") from None
        try:
            if not self._container.streams.video:
                raise DecodeError(self.name, "no video stream")
            self._stream = self._container.streams.video[0]
            if _THREADS is not None:
                self._stream.codec_context.thread_count = _THREADS
            self._index()
        except DecodeError:
            self.close()
            raise
        except Exception as e:
            self.close()
            raise DecodeError(self.name, f"corrupt video ({_why(e)})") from None
        self._decoder = None
        self._position = None  # pts of the last decoded frame

    def _index(self):
        pts, keyframes = [], []
        for packet in self._container.demux(self._stream):
            if packet.size == 0 or packet.pts is None:
                continue
            pts.append(packet.pts)
            if packet.is_keyframe:
                keyframes.append(packet.pts)
        if not pts:
            raise DecodeError(self.name, "no video frames")
        self._pts = sorted(pts)
        self._keyframes = sorted(keyframes) or [self._pts[0]]

    @property
    def num_frames(self) -> int:
        return len(self._pts)

    @property
    def fps(self) -> float:
        """Frames per second: the stream's average rate, else the frames' timestamps' rate."""
        rate = self._stream.average_rate or self._stream.guessed_rate
        if rate:
            return float(rate)
        span = (self._pts[-1] - self._pts[0]) * float(self._stream.time_base or 0)
        if len(self._pts) < 2 or span <= 0:
            raise DecodeError(self.name, "unknown frame rate")
        return (len(self._pts) - 1) / span

    def _seek(self, pts: int):
        self._container.seek(pts, stream=self._stream, backward=True, any_frame=False)
        self._decoder = self._container.decode(self._stream)
        self._position = None

    def _next_frame(self):
        try:
            frame = next(self._decoder)
        except StopIteration:
            return None
        self._position = frame.pts
        return frame

    def get(self, indices: Sequence[int]) -> np.ndarray:
        """uint8 RGB ``[len(indices), H, W, 3]`` for 0-based frame ``indices`` (any order,
        repeats allowed); each distinct frame is decoded once."""
        wanted = sorted({int(i) for i in indices})
        if wanted and not (0 <= wanted[0] and wanted[-1] < self.num_frames):
            raise DecodeError(self.name, f"frame index out of range 0..{self.num_frames - 1}: "
                                         f"{wanted[0] if wanted[0] < 0 else wanted[-1]}")
        decoded: dict[int, np.ndarray] = {}
        try:
            for i in wanted:
                target = self._pts[i]
                key = self._keyframes[max(bisect.bisect_right(self._keyframes, target) - 1, 0)]
                if self._decoder is None or self._position is None or not (key <= self._position < target):
                    self._seek(key)
                while True:
                    frame = self._next_frame()
                    if frame is None:
                        raise DecodeError(self.name, f"truncated video: frame {i} of "
                                                     f"{self.num_frames} cannot be decoded")
                    if frame.pts is None or frame.pts >= target:
                        decoded[i] = _rgb(frame)
                        break
        except DecodeError:
            raise
        except Exception as e:
            raise DecodeError(self.name, f"corrupt video ({_why(e)})") from None
        return _stack([decoded[int(i)] for i in indices],
                      [f"{self.name}[frame {int(i)}]" for i in indices])

    def frames(self) -> Iterator[np.ndarray]:
        """Every frame in order, uint8 RGB ``[H, W, 3]``, decoded from the start one at a time
        (memory of one frame); raises ``DecodeError`` unless all ``num_frames`` frames decode."""
        count = 0
        try:
            self._seek(self._keyframes[0])
            for frame in self._decoder:
                if count == self.num_frames:
                    break
                count += 1
                yield _rgb(frame)
        except DecodeError:
            raise
        except Exception as e:
            raise DecodeError(self.name, f"corrupt video ({_why(e)})") from None
        finally:
            self._decoder = None
        if count < self.num_frames:
            raise DecodeError(self.name, f"truncated video: {count} of {self.num_frames} frames decode")

    def verify(self) -> int:
        """Decode every frame from the start (nothing kept); raises ``DecodeError`` unless all
        ``num_frames`` frames decode, all of one size. Returns the frame count."""
        sizes = set()  # frames of different sizes cannot be stacked into one clip
        try:
            self._seek(self._keyframes[0])
            count = 0
            for frame in self._decoder:
                count += 1
                sizes.add((frame.width, frame.height))
        except Exception as e:
            raise DecodeError(self.name, f"corrupt video ({_why(e)})") from None
        finally:
            self._decoder = None
        if count < self.num_frames:
            raise DecodeError(self.name, f"truncated video: {count} of {self.num_frames} frames decode")
        if len(sizes) > 1:
            raise DecodeError(self.name, "frames of different sizes "
                              + ", ".join(f"{w}x{h}" for w, h in sorted(sizes)))
        return count

    def close(self):
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
            self._container = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _rgb(frame) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` of a decoded frame as the video is meant to be shown: its
    display rotation applied (a phone's portrait video is stored landscape with a display
    matrix rotating it a quarter turn; PyAV's ``frame.rotation`` is counter-clockwise)."""
    array = frame.to_ndarray(format="rgb24")
    turns = round((frame.rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(array, turns)) if turns else array


_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")


def _plain(e: Exception) -> str:
    """An exception's message without object reprs (``<_io.BytesIO object at 0x...>``)."""
    return _REPR.sub("", str(e)).strip()


def _why(e: Exception) -> str:
    return f"{type(e).__name__}: {_plain(e)}".strip()
