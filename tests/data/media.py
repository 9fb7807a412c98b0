"""Helpers that write real media files for the data tests, good and broken."""

import os

import cv2
import numpy as np
from PIL import Image

from ppsn.data import toy


def frames(num_frames=30, width=96, height=64, seed=0):
    return toy.render_video(seed % 10, num_frames, width, height, np.random.default_rng(seed))


def write_video(path, codec, data, fmt=None, gop=6, rotation=0):
    """Write ``data`` (RGB frames) with PyAV using ``codec`` into ``path``; ``rotation``:
    a display matrix turning it that many degrees counter-clockwise (as a phone tags a
    portrait video stored landscape)."""
    import av

    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height = data.shape[2], data.shape[1]
        stream.pix_fmt = "yuv420p" if codec != "mjpeg" else "yuvj420p"
        stream.codec_context.gop_size = gop
        if rotation:
            stream.set_display_rotation(rotation)
        for frame in data:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def decode_all(path):
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def truncate(path, fraction=0.5):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * fraction)])
    return str(path)


def write_jpeg(path, rgb, mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(rgb)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, quality=95)
    return str(path)


def write_frame_dir(directory, data):
    os.makedirs(directory, exist_ok=True)
    for t, frame in enumerate(data, start=1):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        with open(os.path.join(directory, f"img_{t:05d}.jpg"), "wb") as f:
            f.write(buf.tobytes())
    return str(directory)
