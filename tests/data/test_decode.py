import os

import numpy as np
import pytest

from ppsn.data import decode
from ppsn.data.decode import DecodeError, VideoFile
from tests.data import media

VIDEO_KINDS = [("mp4", "libx264"), ("mp4", "mpeg4"), ("avi", "mpeg4"), ("avi", "mjpeg"),
               ("webm", "libvpx"), ("mkv", "libx264")]


@pytest.mark.parametrize("ext,codec", VIDEO_KINDS)
def test_video_random_access_equals_sequential_decoding(tmp_path, ext, codec):
    path = media.write_video(tmp_path / f"v.{ext}", codec, media.frames(40), gop=6)
    reference = media.decode_all(path)
    with VideoFile(path) as video:
        assert video.num_frames == len(reference) == 40
        for indices in ([0, 13, 39], [39, 2, 2, 17], [5, 6, 7, 30, 31], list(range(40))):
            np.testing.assert_array_equal(video.get(indices), reference[indices])
        with open(path, "rb") as f:
            data = f.read()
    with VideoFile(data, name="from-bytes") as video:
        np.testing.assert_array_equal(video.get([3, 33]), reference[[3, 33]])


@pytest.mark.parametrize("rotation, turns", [(90, 1), (-90, 3), (180, 2)])
def test_a_video_tagged_with_a_rotation_decodes_as_it_is_shown(tmp_path, rotation, turns):
    """A display matrix (a phone's portrait video stored landscape) is applied, not ignored:
    the same frames encoded with and without it decode to turned copies of each other."""
    data = media.frames(12, 96, 64)
    plain = media.write_video(tmp_path / "plain.mp4", "libx264", data)
    tagged = media.write_video(tmp_path / "tagged.mp4", "libx264", data, rotation=rotation)
    with VideoFile(plain) as a, VideoFile(tagged) as b:
        upright = a.get([0, 5, 11])
        turned = b.get([0, 5, 11])
        every = np.stack(list(b.frames()))
    assert turned.shape == ((3, 96, 64, 3) if turns % 2 else (3, 64, 96, 3))
    np.testing.assert_array_equal(turned, np.rot90(upright, turns, axes=(1, 2)))
    np.testing.assert_array_equal(every[[0, 5, 11]], turned)


def test_video_decodes_only_from_the_keyframe_before_each_target(tmp_path, monkeypatch):
    path = media.write_video(tmp_path / "long.mp4", "libx264", media.frames(120), gop=10)
    decoded = []
    with VideoFile(path) as video:
        original = video._next_frame

        def counting():
            frame = original()
            decoded.append(frame.pts)
            return frame

        monkeypatch.setattr(video, "_next_frame", counting)
        video.get([95, 5, 55])
    # Three targets, each at most one GOP (10 frames) after its keyframe: far fewer than 96.
    assert len(decoded) <= 3 * 10


def test_bad_videos_give_clear_errors(tmp_path):
    media.write_video(tmp_path / "good.avi", "mpeg4", media.frames(40), gop=40)
    cases = {
        "missing video file": str(tmp_path / "nope.mp4"),
        "0 bytes": str(tmp_path / "empty.mp4"),
        "cannot open video": str(tmp_path / "garbage.webm"),
    }
    open(cases["0 bytes"], "wb").close()
    with open(cases["cannot open video"], "wb") as f:
        f.write(os.urandom(5000))
    for reason, path in cases.items():
        with pytest.raises(DecodeError, match=reason) as err:
            VideoFile(path)
        assert err.value.path == path
    truncated = media.truncate(tmp_path / "good.avi", 0.5)
    with pytest.raises(DecodeError) as err:
        with VideoFile(truncated) as video:  # half the frames are gone: some step must say so
            video.verify()
            video.get([39])
    assert err.value.path == truncated
    with VideoFile(media.write_video(tmp_path / "ok.mp4", "mpeg4", media.frames(5))) as video:
        with pytest.raises(DecodeError, match="out of range"):
            video.get([5])


def test_frame_files_and_jpeg_bytes(tmp_path):
    data = media.frames(6)
    frame_dir = media.write_frame_dir(tmp_path / "clip", data)
    got = decode.read_frame_files(frame_dir, [0, 5, 5, 2])
    assert got.shape == (4, 64, 96, 3) and got.dtype == np.uint8
    assert np.abs(got[1].astype(int) - data[5]).mean() < 3  # JPEG round trip
    jpegs = [open(os.path.join(frame_dir, f"img_{i:05d}.jpg"), "rb").read() for i in range(1, 7)]
    np.testing.assert_array_equal(decode.decode_jpeg_frames(jpegs, [0, 5, 5, 2], "rec"), got)
    with pytest.raises(DecodeError, match="missing frame file") as err:
        decode.read_frame_files(frame_dir, [6])
    assert err.value.path.endswith("img_00007.jpg")
    with pytest.raises(DecodeError, match="record has 6"):
        decode.decode_jpeg_frames(jpegs, [6], "rec")


def test_grayscale_and_cmyk_jpegs_decode_to_rgb(tmp_path):
    rgb = media.frames(1)[0]
    for mode in ("L", "CMYK"):
        path = media.write_jpeg(str(tmp_path / mode / "img_00001.jpg"), rgb, mode)
        got = decode.read_frame_files(os.path.dirname(path), [0])
        assert got.shape == (1, 64, 96, 3)
        assert np.abs(got[0].astype(int) - rgb).mean() < 40


def test_corrupt_and_empty_jpegs(tmp_path):
    with pytest.raises(DecodeError, match="empty image"):
        decode.decode_jpeg(b"", "x.jpg")
    with pytest.raises(DecodeError, match="corrupt or unsupported") as err:
        decode.decode_jpeg(b"\xff\xd8garbage" * 10, "bad.jpg")
    assert err.value.path == "bad.jpg"
    assert " at 0x" not in err.value.reason and "<" not in err.value.reason  # no object reprs


def test_frames_of_different_sizes_name_the_offending_file(tmp_path):
    a = media.frames(1, 32, 32)[0]
    b = media.frames(1, 40, 32)[0]
    d = tmp_path / "mixed"
    media.write_frame_dir(d, np.stack([a, a]))
    media.write_jpeg(str(d / "img_00003.jpg"), b)
    with pytest.raises(DecodeError, match="different sizes") as err:
        decode.read_frame_files(str(d), [0, 1, 2])
    assert err.value.path == str(d / "img_00003.jpg")  # the file, not the folder
    assert "40x32" in err.value.reason and "32x32" in err.value.reason
    jpegs = [open(d / f"img_0000{i}.jpg", "rb").read() for i in (1, 2, 3)]
    with pytest.raises(DecodeError, match="different sizes") as err:
        decode.decode_jpeg_frames(jpegs, [2, 0], "rec")
    assert err.value.path == "rec[frame 0]"


class _CountingContainer:
    """A PyAV container whose ``decode`` is PyAV's own loop (demux, send each packet, pull its
    frames) with counts: the packets sent to the decoder and the frames pulled from it."""

    def __init__(self, container):
        self._container, self.sent, self.pulled = container, [], []

    def __getattr__(self, name):
        return getattr(self._container, name)

    def decode(self, stream):
        for packet in self._container.demux(stream):
            self.sent.append(packet.pts)
            for frame in packet.decode():
                self.pulled.append(frame.pts)
                yield frame


@pytest.mark.parametrize("num_seg,mode", [(3, "train"), (25, "test"), (3, "valid")])
def test_decoding_stops_at_the_last_sampled_frame(tmp_path, num_seg, mode):
    from ppsn.data.sampling import sample_segments

    # h264 with B-frames: the decoder holds frames back, so "stop" is checked on both sides.
    path = media.write_video(tmp_path / "bframes.mp4", "libx264", media.frames(100), gop=25)
    for seed in range(4):
        with VideoFile(path) as video:
            counting = video._container = _CountingContainer(video._container)
            indices = sample_segments(video.num_frames, num_seg, mode, np.random.default_rng(seed))
            video.get(indices)
            last = video._pts[int(max(indices))]
            reorder = int(video._stream.codec_context.has_b_frames)
        assert reorder  # the file has B-frames
        assert max(counting.pulled) == last  # the last sampled frame was reached...
        assert not [p for p in counting.pulled if p > last]  # ...and nothing decoded past it
        # Packets past it reach the decoder only as its B-frame reorder delay requires.
        assert len([p for p in counting.sent if p is not None and p > last]) <= reorder + 1
