"""One record -> one uint8 clip: sample the segments, decode just those frames, transform.

The per-mode transforms are PaddleVideo's PP-TSN pipelines:

* ``train``: Scale(short_size) -> MultiScaleCrop(target_size) -> RandomFlip;
* ``valid``: Scale(short_size) -> CenterCrop(target_size);
* ``test``:  Scale(short_size) -> TenCrop(target_size) (T = num_seg * 10 views).

Normalization is not done here: batches stay uint8 and the device normalizes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ppsn.data import decode, sampling, transforms

MODES = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """How clips are made: sampling and sizes."""

    mode: str = "valid"
    num_seg: int = 3
    short_size: int = 256
    target_size: int = 224
    sampling: str | None = None  # override the sampling mode, e.g. 'linspace' for videos at test
    # Test mode only: hand the device the scaled frames on a canvas x canvas uint8 canvas (plus
    # their height and width) and let it cut the TenCrop views (ppsn.data.transforms.
    # ten_crop_on_device), instead of copying 10 crops of every frame on the host.
    device_crops: bool = False
    canvas: int = 456

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.target_size > self.short_size:
            raise ValueError(f"target_size {self.target_size} exceeds short_size {self.short_size}")

    @property
    def views(self) -> int:
        """Views the model averages over: num_seg, or num_seg * 10 for TenCrop."""
        return self.num_seg * (10 if self.mode == "test" else 1)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape of one clip as the pipeline hands it over."""
        if self.mode == "test" and self.device_crops:
            return (self.num_seg, self.canvas, self.canvas, 3)
        return (self.views, self.target_size, self.target_size, 3)


def record_name(record) -> str:
    """The file a record comes from, for error messages."""
    for key in ("frame_dir", "video_path"):
        if key in record:
            return record[key]
    return record.get("video_id", "<record>")


def decode_sampled(record, spec: ClipSpec, rng: np.random.Generator | None) -> np.ndarray:
    """Decode the frames ``sample_segments`` picks for this record -> uint8 ``[num_seg, H, W, 3]``."""
    mode = spec.sampling or spec.mode
    if "frame_dir" in record:
        indices = sampling.sample_segments(record["num_frames"], spec.num_seg, mode, rng)
        return decode.read_frame_files(record["frame_dir"], indices)
    if "jpegs" in record:
        jpegs = record["jpegs"]
        if not jpegs:
            raise decode.DecodeError(record_name(record), "record has no frames")
        indices = sampling.sample_segments(len(jpegs), spec.num_seg, mode, rng)
        return decode.decode_jpeg_frames(jpegs, indices, record_name(record))
    source = record.get("video_path", record.get("video_bytes"))
    if source is None:
        raise ValueError(f"record has no frames or video: {sorted(record)}")
    with decode.VideoFile(source, name=record_name(record)) as video:
        indices = sampling.sample_segments(video.num_frames, spec.num_seg, mode, rng)
        return video.get(indices)


def transform_clip(frames: np.ndarray, spec: ClipSpec, rng: np.random.Generator | None
                   ) -> np.ndarray:
    """The per-mode host transforms on decoded frames -> contiguous uint8 ``spec.shape``."""
    frames = transforms.scale(frames, spec.short_size)
    if spec.mode == "train":
        frames = transforms.multi_scale_crop(frames, spec.target_size, rng)
        frames = transforms.random_flip(frames, rng)
    elif spec.mode == "valid":
        frames = transforms.center_crop(frames, spec.target_size)
    else:
        frames = transforms.ten_crop(frames, spec.target_size)
    return np.ascontiguousarray(frames)


def load_clip(record, spec: ClipSpec, rng: np.random.Generator | None = None) -> np.ndarray:
    """Decode and transform one record -> uint8 ``spec.shape``. Raises
    :class:`ppsn.data.decode.DecodeError`."""
    if spec.mode == "test" and spec.device_crops:
        raise ValueError("device_crops clips come from load_canvas_clip")
    if spec.mode == "train" and rng is None:
        raise ValueError("train clips need an rng")
    return transform_clip(decode_sampled(record, spec, rng), spec, rng)


def load_canvas_clip(record, spec: ClipSpec) -> tuple[np.ndarray, np.ndarray]:
    """Test mode with ``device_crops``: the scaled frames on a ``canvas x canvas`` uint8 canvas
    (top-left aligned) and their int32 ``(height, width)``; the device cuts the TenCrop views."""
    frames = transforms.scale(decode_sampled(record, spec, None), spec.short_size)
    return transforms.place_on_canvas(frames, spec.canvas)
