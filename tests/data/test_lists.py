import pytest

from ppsn.data.lists import ListFileSource


def test_frames_and_videos_lists(tmp_path):
    frames = tmp_path / "train_frames.list"
    frames.write_text("clips/a 30 0\n/abs/b 12 3\n\n# comment\n")
    src = ListFileSource(str(frames), "frames", data_prefix="/data", num_classes=4)
    assert len(src) == 2 and not src.skipped
    assert src[0] == {"video_id": "clips/a", "label": 0, "frame_dir": "/data/clips/a",
                      "num_frames": 30, "index": 0}
    assert src[1]["frame_dir"] == "/abs/b"
    videos = tmp_path / "val.list"
    videos.write_text("k400/abseiling/x_000001_000011.mp4 0\n")
    src = ListFileSource(str(videos), "videos", data_prefix="/data")
    assert src[0]["video_path"] == "/data/k400/abseiling/x_000001_000011.mp4"
    assert src[0]["video_id"] == "x_000001_000011"
    assert len(src.fingerprint()) == 64


def test_bad_lines_are_skipped_counted_and_logged(tmp_path, caplog):
    path = tmp_path / "bad.list"
    path.write_text("a 10 1\nb ten 1\nc 10\nd 10 7\ne 0 1\nf 10 -1\ng 5 2 extra\nh 10 2\n")
    src = ListFileSource(str(path), "frames", num_classes=5)
    assert [r["video_id"] for r in src] == ["a", "h"]
    assert [r["index"] for r in src] == [0, 1]
    reasons = {s.line_number: s.reason for s in src.skipped}
    assert reasons == {
        2: "num_frames is not an integer: 'ten'",
        3: "expected 'frame_dir num_frames label', got 2 fields",
        4: "label 7 out of range [0, 5)",
        5: "num_frames must be >= 1, got 0",
        6: "label -1 out of range [0, 5)",
        7: "expected 'frame_dir num_frames label', got 4 fields",
    }
    assert "bad.list: skipping line 4" in caplog.text
    assert "6 bad lines skipped, 2 records kept" in caplog.text


def test_missing_or_binary_list_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="list file not found"):
        ListFileSource(str(tmp_path / "nope.list"), "videos")
    binary = tmp_path / "bin.list"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(ValueError, match="bin.list: not a text list file"):
        ListFileSource(str(binary), "videos")
    with pytest.raises(ValueError, match="format must be one of"):
        ListFileSource(str(binary), "rawframes")


def test_a_byte_order_mark_is_skipped_in_lists_and_label_lists(tmp_path):
    from ppsn.data.labels import read_label_names
    from ppsn.data.lists import list_format

    videos = tmp_path / "val.list"
    videos.write_bytes(b"\xef\xbb\xbfa.mp4 1\n")
    src = ListFileSource(str(videos), "videos", data_prefix="/data")
    assert src[0]["video_path"] == "/data/a.mp4" and list_format(str(videos)) == "videos"
    labels = tmp_path / "labels.txt"
    labels.write_bytes("\ufeff0 abseiling\n1 air drumming\n".encode())
    assert read_label_names(str(labels)) == {0: "abseiling", 1: "air drumming"}


@pytest.mark.parametrize("text, message", [
    ("0 a\n1 b\n\n1 c\n", "lines 2 and 4 give the same id 1"),
    ("0 a\n1 b\n2 a\n", "lines 1 and 3 give the same name 'a'"),
])
def test_a_label_list_giving_an_id_or_a_name_twice_is_refused(tmp_path, text, message):
    from ppsn.data.labels import read_label_names

    labels = tmp_path / "labels.txt"
    labels.write_text(text)
    with pytest.raises(ValueError, match=f"^{labels}: {message}$"):
        read_label_names(str(labels))
