"""Frame transforms, bit-exact with PaddleVideo's ``Scale``, ``MultiScaleCrop``, ``CenterCrop``,
``TenCrop`` and ``RandomFlip`` (cv2 backend), on uint8 RGB frames ``[T, H, W, 3]``.

Every function is pure (randomness comes in as a ``numpy.random.Generator``) and returns uint8;
``normalize`` turns uint8 into the model's float input and runs as well on the device
(``jax.numpy`` arrays) as on the host. The exact rounding rules are pinned by
``shared/fixtures/paddle_pipeline/README.md`` and the tests.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MULTISCALE_SCALES = (1.0, 0.875, 0.75, 0.66)


def _check_frames(frames) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")


def _resize(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    out = np.empty((frames.shape[0], height, width, 3), np.uint8)
    for t, frame in enumerate(frames):
        cv2.resize(frame, (width, height), dst=out[t], interpolation=cv2.INTER_LINEAR)
    return out


def scaled_size(width: int, height: int, short_size: int) -> tuple[int, int]:
    """Output (width, height) of ``Scale(short_size, fixed_ratio=False, do_round=True)``."""
    if min(width, height) == short_size:
        return width, height
    factor = short_size / min(width, height)
    return int(width * factor + 0.5), int(height * factor + 0.5)


def scale(frames: np.ndarray, short_size: int) -> np.ndarray:
    """Resize so that the short side is ``short_size`` (cv2 bilinear); unchanged if it already is."""
    _check_frames(frames)
    height, width = frames.shape[1:3]
    new_w, new_h = scaled_size(width, height, short_size)
    if (new_w, new_h) == (width, height):
        return frames
    return _resize(frames, new_w, new_h)


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """``CenterCrop(size, do_round=False)``: top-left ``((W - size) // 2, (H - size) // 2)``."""
    _check_frames(frames)
    height, width = frames.shape[1:3]
    if width < size or height < size:
        raise ValueError(f"cannot crop {size}x{size} from frames of {width}x{height}")
    x, y = (width - size) // 2, (height - size) // 2
    return frames[:, y:y + size, x:x + size]


def ten_crop_offsets(width, height, size: int, check: bool = True) -> list[tuple]:
    """(x, y) of TenCrop's 5 positions, with PaddleVideo's integer steps, in its order.

    Plain integer arithmetic, so it works on traced jax integers too (``check=False`` there:
    the size check needs concrete values)."""
    if check and (width < size or height < size):
        raise ValueError(f"cannot crop {size}x{size} from frames of {width}x{height}")
    w_step, h_step = (width - size) // 4, (height - size) // 4
    return [(0, 0), (4 * w_step, 0), (0, 4 * h_step), (4 * w_step, 4 * h_step),
            (2 * w_step, 2 * h_step)]


def ten_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """``[10 * T, size, size, 3]``: for each of the 5 positions, the T crops then the T flipped
    crops, so view ``(2 * position + flipped) * T + t``."""
    _check_frames(frames)
    height, width = frames.shape[1:3]
    views = []
    for x, y in ten_crop_offsets(width, height, size):
        crops = frames[:, y:y + size, x:x + size]
        views.append(crops)
        views.append(crops[:, :, ::-1])
    return np.concatenate(views, axis=0)


def place_on_canvas(frames: np.ndarray, canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``[T, H, W, 3]`` at the top-left of a zero ``[T, canvas, canvas, 3]`` canvas, and
    ``(H, W)`` as int32. A side longer than ``canvas`` is centre-cropped to it (ultra-wide
    videos; K400's 16:9 at short side 256 is 455 wide and fits the default 456)."""
    _check_frames(frames)
    t, h, w, _ = frames.shape
    if h > canvas or w > canvas:
        y, x = max(0, (h - canvas) // 2), max(0, (w - canvas) // 2)
        frames = frames[:, y:y + canvas, x:x + canvas]
        t, h, w, _ = frames.shape
    out = np.zeros((t, canvas, canvas, 3), np.uint8)
    out[:, :h, :w] = frames
    return out, np.array([h, w], np.int32)


def ten_crop_on_device(frames, hw, size: int):
    """jax: TenCrop of canvas frames ``[B, T, C, C, 3]`` with real sizes ``hw`` ``[B, 2]`` ->
    ``[B, 10 * T, size, size, 3]``, the same pixels and order as :func:`ten_crop` (offsets from
    each video's own height and width)."""
    import jax
    import jax.numpy as jnp

    def one(video, video_hw):
        views = []
        t = video.shape[0]
        for x, y in ten_crop_offsets(video_hw[1], video_hw[0], size, check=False):
            crops = jax.lax.dynamic_slice(video, (0, y, x, 0), (t, size, size, 3))
            views += [crops, crops[:, :, ::-1]]
        return jnp.concatenate(views, axis=0)

    return jax.vmap(one)(frames, hw)


def flip(frames: np.ndarray) -> np.ndarray:
    """Mirror every frame horizontally (a contiguous copy: OpenCV's flip, 2x numpy's copy of a
    reversed view)."""
    out = np.empty(frames.shape, frames.dtype)
    for i, frame in enumerate(frames):
        out[i] = cv2.flip(np.ascontiguousarray(frame), 1)
    return out


def random_flip(frames: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """``RandomFlip``: one draw per clip; if it hits, every frame is mirrored."""
    return flip(frames) if rng.random() < p else frames


def multiscale_crop_sizes(width: int, height: int, size: int,
                          scales: Sequence[float] = MULTISCALE_SCALES,
                          max_distort: int = 1) -> list[tuple[int, int]]:
    """The (crop_w, crop_h) pairs MultiScaleCrop chooses from, in PaddleVideo's order."""
    crop_sizes = [int(min(width, height) * s) for s in scales]
    snapped = [size if abs(c - size) < 3 else c for c in crop_sizes]
    return [(w, h) for i, h in enumerate(snapped) for j, w in enumerate(snapped)
            if abs(i - j) <= max_distort]


def multiscale_crop_offsets(width: int, height: int, crop_w: int, crop_h: int
                            ) -> list[tuple[float, float]]:
    """The 13 (x, y) offsets of ``fix_crop`` + ``more_fix_crop`` with ``allow_duplication``, in
    code order; duplicates are kept, so repeated positions are proportionally more likely."""
    w, h = (width - crop_w) / 4, (height - crop_h) / 4
    return [(0, 0), (4 * w, 0), (0, 4 * h), (4 * w, 4 * h), (2 * w, 2 * h),
            (0, 2 * h), (4 * w, 2 * h), (2 * w, 4 * h), (2 * w, 0),
            (w, h), (3 * w, h), (w, 3 * h), (3 * w, 3 * h)]


def pil_crop_box(x: float, y: float, crop_w: int, crop_h: int) -> tuple[int, int, int, int]:
    """The integer box PIL's ``Image.crop`` uses for a float box: each coordinate rounded with
    Python's ``round`` (half to even), e.g. 99.5 -> 100, 149.25 -> 149."""
    return round(x), round(y), round(x + crop_w), round(y + crop_h)


def resized_crop(frames: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop ``box = (x0, y0, x1, y1)`` and resize to ``size x size`` with cv2 bilinear."""
    x0, y0, x1, y1 = box
    crops = frames[:, y0:y1, x0:x1]
    if crops.shape[1:3] == (size, size):
        return crops
    return _resize(crops, size, size)


def multi_scale_crop(frames: np.ndarray, size: int, rng: np.random.Generator,
                     scales: Sequence[float] = MULTISCALE_SCALES) -> np.ndarray:
    """``MultiScaleCrop(size)``: a uniformly drawn (crop_w, crop_h) pair, then a uniformly drawn
    entry of the 13-offset list, the same for every frame; resized to ``size x size``."""
    _check_frames(frames)
    height, width = frames.shape[1:3]
    pairs = multiscale_crop_sizes(width, height, size, scales)
    crop_w, crop_h = pairs[rng.integers(len(pairs))]
    offsets = multiscale_crop_offsets(width, height, crop_w, crop_h)
    x, y = offsets[rng.integers(len(offsets))]
    return resized_crop(frames, pil_crop_box(x, y, crop_w, crop_h), size)


def normalization_table(mean: Sequence[float] = IMAGENET_MEAN,
                        std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """float32 ``[256, 3]``: the normalized value of every uint8 level in every channel,
    ``((v / 255) - mean) / std`` computed in float32 in PaddleVideo's order."""
    levels = np.arange(256, dtype=np.float32)[:, None]
    return (levels / np.float32(255) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def normalization_scale_shift(mean: Sequence[float] = IMAGENET_MEAN,
                              std: Sequence[float] = IMAGENET_STD):
    """float32 ``(scale, shift)`` per channel: ``x * scale + shift`` is ``((x / 255) - mean) /
    std`` up to float32 rounding (within 5e-7 of PaddleVideo's float32 values for every uint8
    level, checked in ``tests/data/test_transforms.py``)."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)


def normalize(frames, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD):
    """uint8 ``[..., 3]`` -> float32 ``((x / 255) - mean) / std``. On the host (numpy) bit-exact
    with PaddleVideo's float32 output: a lookup in :func:`normalization_table`. On the device
    (jax arrays) one multiply-add per value (:func:`normalization_scale_shift`, within 1e-6 of
    those values), which XLA fuses into the first convolution's input instead of gathering
    from a table; the bf16 compute cast then rounds far more."""
    if isinstance(frames, np.ndarray):
        return normalization_table(mean, std)[frames, np.arange(3)]
    import jax.numpy as jnp

    scale, shift = normalization_scale_shift(mean, std)
    return frames.astype(jnp.float32) * scale + shift
