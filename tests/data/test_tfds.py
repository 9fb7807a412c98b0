"""TFDS builders write real ArrayRecord files and read them back, without TensorFlow."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from ppsn.data import pipeline
from ppsn.data.clips import ClipSpec, load_clip
from ppsn.data.decode import decode_jpeg
from ppsn.data.prepare import prepare, summary
from ppsn.data.tfds import TfdsSource
from tests.data import media


def test_tensorflow_is_not_needed():
    import importlib.util

    assert importlib.util.find_spec("tensorflow") is None, "tests must prove TF is not needed"


def test_prepare_cli_toy_frames_and_read_back(toy_dir, tmp_path):
    out = tmp_path / "tfds"
    result = subprocess.run(
        [sys.executable, "-m", "ppsn.data.prepare", "--dataset", "toy", "--manual_dir",
         str(toy_dir), "--data_dir", str(out), "--num_workers", "2"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "train: 30 videos" in result.stdout and "val: 20 videos" in result.stdout
    assert "skipped: 0" in result.stdout
    source = TfdsSource("toy", "val", str(out), "frames")
    assert len(source) == 20 and source.num_classes == 10
    record = source[0]
    assert len(record["jpegs"]) == 12
    assert decode_jpeg(record["jpegs"][0]).shape == (256, 341, 3)  # short side 256, as PaddleVideo
    ds = pipeline.eval_dataset(source, ClipSpec("valid", 3, 256, 224), 8, process_index=0,
                               process_count=1)
    labels = np.concatenate([b["label"][b["mask"]] for b in ds])
    assert sorted(labels.tolist()) == sorted([i for i in range(10) for _ in range(2)])


def test_videos_config_stores_the_file_bytes(toy_dir, tmp_path):
    builder = prepare("toy", str(toy_dir), str(tmp_path), "videos")
    assert builder.written == {"train": 30, "val": 20, "test": 10}
    source = TfdsSource("toy", "test", str(tmp_path), "videos")
    record = source[0]
    with open(toy_dir / "videos" / f"{record['video_id']}.mp4", "rb") as f:
        assert f.read() == record["video_bytes"]
    assert load_clip(record, ClipSpec("valid", 3, 64, 48)).shape == (3, 48, 48, 3)
    assert "already prepared" in summary(prepare("toy", str(toy_dir), str(tmp_path), "videos"))


def _video(path, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return media.write_video(path, "mpeg4", media.frames(10, seed=seed))


def test_kinetics400_official_layout_reports_missing_and_corrupt(tmp_path):
    manual = tmp_path / "k400"
    os.makedirs(manual / "annotations")
    rows = {"train": [("abseiling", "aaa", 10, 20), ("zumba", "bbb", 0, 10), ("zumba", "ccc", 5, 15)],
            "validate": [("abseiling", "ddd", 1, 11)]}
    for name, items in rows.items():
        with open(manual / "annotations" / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            writer.writerows([(*r, name) for r in items])
    _video(str(manual / "train" / "abseiling" / "aaa_000010_000020.mp4"))
    open(_video(str(manual / "train" / "zumba" / "ccc_000005_000015.mp4")), "wb").close()
    _video(str(manual / "val" / "ddd_000001_000011.mp4"), seed=3)
    builder = prepare("kinetics400", str(manual), str(tmp_path / "out"), "frames")
    assert builder.written == {"train": 1, "val": 1}
    reasons = {s.video_id: s.reason for s in builder.report}
    assert reasons == {"bbb_000000_000010": "missing video file (not downloaded)",
                       "ccc_000005_000015": "empty video file (0 bytes)"}
    assert os.path.exists(os.path.join(builder.data_dir, "prepare_report.json"))
    text = summary(builder)
    assert "skipped: 2" in text and "missing video file" in text
    source = TfdsSource("kinetics400", "train", str(tmp_path / "out"))
    assert source[0]["video_id"] == "aaa_000010_000020" and source[0]["label"] == 0
    assert source.builder.info.features["label"].names == ["abseiling", "zumba"]


def test_ucf101_official_layout(tmp_path):
    manual = tmp_path / "ucf"
    lists = manual / "ucfTrainTestlist"
    os.makedirs(lists)
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 YoYo\n")
    (lists / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\nYoYo/v_YoYo_g01_c01.avi 2\n")
    (lists / "testlist01.txt").write_text("YoYo/v_YoYo_g02_c01.avi\nYoYo/v_YoYo_g03_c01.avi\n")
    for rel in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "YoYo/v_YoYo_g01_c01.avi",
                "YoYo/v_YoYo_g02_c01.avi"):
        _video(str(manual / "UCF-101" / rel))
    builder = prepare("ucf101", str(manual), str(tmp_path / "out"), "videos")
    assert builder.written == {"train": 2, "val": 1}
    assert [(s.video_id, s.reason) for s in builder.report] == [("v_YoYo_g03_c01", "missing video file")]
    source = TfdsSource("ucf101", "train", str(tmp_path / "out"), "videos")
    assert sorted(source[i]["label"] for i in range(2)) == [0, 1]


def test_list_file_layout_with_bad_lines(tmp_path):
    manual = tmp_path / "lists"
    _video(str(manual / "v" / "a.mp4"))
    _video(str(manual / "v" / "b.mp4"))
    (manual / "train.list").write_text("v/a.mp4 3\nv/b.mp4 999\nv/c.mp4 1\nnonsense\n")
    builder = prepare("ucf101", str(manual), str(tmp_path / "out"), "frames")
    assert builder.written == {"train": 1}
    reasons = sorted(s.reason for s in builder.report)
    assert reasons == ["expected 'path label', got 1 fields", "label 999 out of range [0, 101)",
                       "missing video file"]


def test_unprepared_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m ppsn.data.prepare --dataset ucf101"):
        TfdsSource("ucf101", "train", str(tmp_path))
