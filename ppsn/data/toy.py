"""The embedded toy dataset: moving shapes, written as real video files and JPEG frame folders.

10 action classes = 5 shapes (circle, square, triangle, cross, ring) x 2 colour families (warm,
cool). Each video moves one shape of its class across a random gradient background with random
start, speed, size and hue jitter, plus a small grey distractor blob, so that a small TSN has something to
learn but reaches >= 90% Top-1 in minutes. Everything is deterministic given ``--seed``.

Layout written under ``--output``::

    videos/<video_id>.mp4              MPEG-4 Part 2 video (PyAV)
    frames/<video_id>/img_00001.jpg    the same frames as JPEG (quality 95), 1-based
    {train,val,test}_videos.list       PaddleVideo list files: path label
    {train,val,test}_frames.list       PaddleVideo list files: frame_dir num_frames label
    label_list.txt                     id name

Command line::

    python -m ppsn.data.toy --output data/toy
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import cv2
import numpy as np
from tqdm import tqdm

from ppsn import cli
from ppsn.cli import UserError

SHAPES = ("circle", "square", "triangle", "cross", "ring")
COLOURS = ("warm", "cool")
CLASS_NAMES = tuple(f"{c}_{s}" for c in COLOURS for s in SHAPES)
SPLITS = {"train": 24, "val": 8, "test": 8}  # videos per class
MARKER = "toy.json"

log = logging.getLogger(__name__)


def _colour(family: str, rng: np.random.Generator) -> tuple[int, int, int]:
    hue = rng.uniform(0, 30) if family == "warm" else rng.uniform(95, 130)  # OpenCV hue 0..180
    hsv = np.uint8([[[hue, rng.uniform(170, 255), rng.uniform(170, 255)]]])
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _draw(img, shape: str, centre, radius: int, colour):
    x, y = (int(round(v)) for v in centre)
    if shape == "circle":
        cv2.circle(img, (x, y), radius, colour, -1, cv2.LINE_AA)
    elif shape == "ring":
        cv2.circle(img, (x, y), radius, colour, max(2, radius // 3), cv2.LINE_AA)
    elif shape == "square":
        cv2.rectangle(img, (x - radius, y - radius), (x + radius, y + radius), colour, -1)
    elif shape == "triangle":
        pts = np.array([[x, y - radius], [x - radius, y + radius], [x + radius, y + radius]])
        cv2.fillPoly(img, [pts.astype(np.int32)], colour, cv2.LINE_AA)
    elif shape == "cross":
        t = max(2, radius // 3)
        cv2.rectangle(img, (x - radius, y - t), (x + radius, y + t), colour, -1)
        cv2.rectangle(img, (x - t, y - radius), (x + t, y + radius), colour, -1)


def render_video(label: int, num_frames: int, width: int, height: int,
                 rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB ``[num_frames, height, width, 3]`` of one video of class ``label``."""
    family, shape = CLASS_NAMES[label].split("_")
    # A dim, nearly grey gradient: the shape's colour and outline carry the class.
    a = rng.integers(20, 90) + rng.integers(-8, 9, size=3)
    b = rng.integers(20, 90) + rng.integers(-8, 9, size=3)
    ramp = np.linspace(0, 1, width)[None, :, None]
    background = (a * (1 - ramp) + b * ramp).astype(np.uint8).repeat(height, axis=0)
    colour = _colour(family, rng)
    radius = int(rng.integers(height // 6, height // 3))
    pos = rng.uniform([radius, radius], [width - radius, height - radius])
    vel = rng.uniform(-1, 1, size=2) * rng.uniform(1, 3)
    blob = rng.uniform([0, 0], [width, height])
    blob_colour = (int(rng.integers(60, 200)),) * 3  # a grey distractor
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        img = background.copy()
        cv2.circle(img, (int(blob[0]), int(blob[1])), radius // 3, blob_colour, -1, cv2.LINE_AA)
        _draw(img, shape, pos, radius, colour)
        frames[t] = img
        pos = pos + vel
        for k, limit in ((0, width), (1, height)):  # bounce off the borders
            if not radius <= pos[k] <= limit - radius:
                vel[k] = -vel[k]
                pos[k] = np.clip(pos[k], radius, limit - radius)
    return frames


def write_video(path: str, frames: np.ndarray, fps: int = 25) -> None:
    """Write RGB frames as an MPEG-4 Part 2 video with PyAV (container from the extension)."""
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = 12
        stream.bit_rate = 2_000_000
        stream.thread_count = 1
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_frames(frame_dir: str, frames: np.ndarray, quality: int = 95) -> None:
    os.makedirs(frame_dir, exist_ok=True)
    for t, frame in enumerate(frames, start=1):
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        with open(os.path.join(frame_dir, f"img_{t:05d}.jpg"), "wb") as f:
            f.write(data.tobytes())


def generate(output: str, *, seed: int = 0, num_frames: int = 24, width: int = 128,
             height: int = 96, videos_per_class: dict[str, int] | None = None,
             progress: bool = False) -> dict:
    """Write the dataset under ``output`` (idempotent: an existing complete copy with the same
    settings is kept). Returns the settings, also written to ``output/toy.json``. ``output``
    must be new, an empty folder or one the generator made (:func:`_check_owned`)."""
    settings = {"seed": seed, "num_frames": num_frames, "width": width, "height": height,
                "videos_per_class": dict(videos_per_class or SPLITS),
                "classes": list(CLASS_NAMES)}
    marker = os.path.join(output, MARKER)
    if os.path.exists(marker):
        with open(marker) as f:
            if _load(f) == settings:
                return settings
    _check_owned(output)
    os.makedirs(output, exist_ok=True)
    with open(marker, "w") as f:  # first: the folder is the generator's from now on
        json.dump({"complete": False}, f)
    os.makedirs(os.path.join(output, "videos"), exist_ok=True)
    os.makedirs(os.path.join(output, "frames"), exist_ok=True)
    with open(os.path.join(output, "label_list.txt"), "w") as f:
        f.writelines(f"{i} {name}\n" for i, name in enumerate(CLASS_NAMES))
    total = sum(settings["videos_per_class"].values()) * len(CLASS_NAMES)
    bar = tqdm(total=total, desc="toy videos", unit="video", disable=not progress)
    for split_number, (split, per_class) in enumerate(settings["videos_per_class"].items()):
        video_lines, frame_lines = [], []
        for label in range(len(CLASS_NAMES)):
            for k in range(per_class):
                rng = np.random.default_rng([seed, split_number, label, k])
                video_id = f"{split}_{CLASS_NAMES[label]}_{k:03d}"
                frames = render_video(label, num_frames, width, height, rng)
                write_video(os.path.join(output, "videos", video_id + ".mp4"), frames)
                write_frames(os.path.join(output, "frames", video_id), frames)
                video_lines.append(f"videos/{video_id}.mp4 {label}\n")
                frame_lines.append(f"frames/{video_id} {num_frames} {label}\n")
                bar.update(1)
        with open(os.path.join(output, f"{split}_videos.list"), "w") as f:
            f.writelines(video_lines)
        with open(os.path.join(output, f"{split}_frames.list"), "w") as f:
            f.writelines(frame_lines)
    bar.close()
    with open(marker, "w") as f:
        json.dump(settings, f, indent=2)
    return settings


def _load(f):
    try:
        return json.load(f)
    except ValueError:
        return None


def _check_owned(output: str, name: str = "--output") -> None:
    """The generator only creates a folder or fills one it made (it holds ``toy.json``):
    anything else is refused, so that it never writes over a user's lists or videos."""
    if not os.path.lexists(output):
        return
    if not os.path.isdir(output):
        raise UserError(f"{name}={output} is a file, not a folder the toy generator made: give "
                        "the toy dataset a new folder")
    if os.listdir(output) and not os.path.exists(os.path.join(output, MARKER)):
        hint = (", or set --config.data.generate_toy=False to train on its lists"
                if name.startswith("--config") else "")
        raise UserError(f"{name}={output} holds files the toy generator did not write (no "
                        f"{MARKER}): refusing to write the toy dataset there; give it a new "
                        f"folder{hint}")


def _complete(output: str) -> bool:
    """Whether ``output`` holds a whole toy dataset (its marker has the settings)."""
    try:
        with open(os.path.join(output, MARKER)) as f:
            settings = _load(f)
    except OSError:
        return False
    return isinstance(settings, dict) and "classes" in settings


def main(argv=None) -> int:
    return cli.run(_main, argv)


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppsn.data.toy", description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_frames", type=int, default=24)
    args = parser.parse_args(argv)
    settings = generate(args.output, seed=args.seed, num_frames=args.num_frames, progress=True)
    n = sum(settings["videos_per_class"].values()) * len(CLASS_NAMES)
    print(f"wrote {n} videos of {len(CLASS_NAMES)} classes to {args.output} "
          f"(videos/, frames/, *_videos.list, *_frames.list, label_list.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def ensure_toy_data(data_cfg) -> None:
    """Write the embedded toy dataset to ``data_cfg.data_prefix`` when the config asks for it
    (``generate_toy``) and it is absent (a complete copy is kept as is). ``data_prefix`` must
    be new, an empty folder or one the generator made: a user's data is never written over."""
    if not data_cfg.generate_toy:
        return
    from ppsn import paths

    if paths.is_remote(data_cfg.data_prefix):
        raise UserError(f"--config.data.generate_toy writes local files; data_prefix "
                         f"{data_cfg.data_prefix} is a bucket: generate the toy data locally "
                         "(python -m ppsn.data.toy DIR) and copy it there, then set "
                         "--config.data.generate_toy=False")
    if not _complete(data_cfg.data_prefix):
        _check_owned(data_cfg.data_prefix, "--config.data.data_prefix")
        log.info("generating the toy dataset in %s", data_cfg.data_prefix)
        generate(data_cfg.data_prefix, progress=True)
