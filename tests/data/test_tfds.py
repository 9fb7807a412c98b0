"""TFDS builders write real ArrayRecord files and read them back, without TensorFlow."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ppsn.data import datasets
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
    assert "train: 30/30 videos, skipped 0" in result.stderr  # the progress bar
    source = TfdsSource("toy", "val", str(out), "frames")
    assert len(source) == 20 and source.num_classes == 10
    record = source[0]
    assert len(record["jpegs"]) == 12
    # A frame folder's files are stored byte for byte (what PaddleVideo reads).
    with open(toy_dir / "frames" / record["video_id"].split("/")[-1] / "img_00002.jpg", "rb") as f:
        assert record["jpegs"][1] == f.read()
    ds = datasets.eval_dataset(source, ClipSpec("valid", 3, 256, 224), 8, process_index=0,
                               process_count=1)
    labels = np.concatenate([b["label"][b["mask"]] for b in ds])
    assert sorted(labels.tolist()) == sorted([i for i in range(10) for _ in range(2)])


def test_videos_config_stores_the_file_bytes(toy_dir, tmp_path):
    builder = prepare("toy", str(toy_dir), str(tmp_path), "videos")
    assert builder.written == {"test": 10, "train": 30, "val": 20}
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
    assert builder.written["train"] == 1
    text = summary(builder)
    assert "skipped: 2" in text and "missing video file" in text
    source = TfdsSource("kinetics400", "train", str(tmp_path / "out"))
    assert source[0]["video_id"] == "aaa_000010_000020" and source[0]["label"] == 0
    assert source.class_names == ["abseiling", "zumba"]
    # Video files become JPEG frames with a short side of 256, as PaddleVideo's rawframes.
    assert decode_jpeg(source[0]["jpegs"][0]).shape == (256, 384, 3)


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


# --------------------------------------------------------------- layout: read what a clip uses


def _rchar():
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar"))


def test_a_clip_reads_only_its_sampled_frames(tmp_path):
    """One record per frame: a train clip (3 frames) and a test clip (25) read at most twice
    the encoded bytes of their sampled frames (today's one-record-per-video layout read every
    frame of the video for each clip); the files stay readable by TFDS's own data source."""
    import tensorflow_datasets as tfds

    from ppsn.data import clips, sampling, toy

    manual = tmp_path / "manual"
    toy.write_frames(str(manual / "frames" / "a"), toy.render_video(2, 120, 340, 256,
                                                                    np.random.default_rng(0)))
    (manual / "train_frames.list").write_text("frames/a 120 2\n")
    prepared = prepare("kinetics400", str(manual), str(tmp_path / "out"), "frames")
    source = TfdsSource("kinetics400", "train", str(tmp_path / "out"), "frames")
    record = source[0]
    assert record["num_frames"] == len(record["jpegs"]) == 120 and record["label"] == 2
    reference = tfds.builder_from_directory(prepared.data_dir).as_data_source("train")
    assert len(reference) == 120
    assert [int(reference[t]["frame"]) for t in (0, 57, 119)] == [0, 57, 119]
    assert reference[57]["image"] == record["jpegs"][57]
    for spec in (ClipSpec("train", 3, 256, 224), ClipSpec("test", 25, 256, 224, device_crops=True)):
        clips.decode_sampled(record, spec, np.random.default_rng(0))  # shards opened
        read = sampled = 0
        for seed in range(10):
            rng = np.random.default_rng(seed)
            wanted = set(sampling.sample_segments(120, spec.num_seg, spec.mode,
                                                  np.random.default_rng(seed)).tolist())
            sampled += sum(len(record["jpegs"][i]) for i in wanted)
            start = _rchar()
            clips.decode_sampled(source[0], spec, rng)
            read += _rchar() - start
        assert read <= 2 * sampled, (spec.mode, read, sampled)
        assert read / 10 < 0.5 * sum(len(j) for j in record["jpegs"])  # far from the whole video


def test_data_of_the_older_layout_is_refused_with_what_to_run(tmp_path):
    old = tmp_path / "ucf101" / "frames" / "1.0.0"
    os.makedirs(old)
    (old / "dataset_info.json").write_text("{}")
    with pytest.raises(FileNotFoundError) as err:
        TfdsSource("ucf101", "train", str(tmp_path))
    message = str(err.value)
    assert "\n" not in message and "older ppsn" in message and str(old) in message
    assert "re-run python -m ppsn.data.prepare --dataset ucf101 --config frames" in message
    os.makedirs(tmp_path / "ucf101" / "frames" / "2.0.0.incomplete")
    with pytest.raises(FileNotFoundError, match="not finished .* to resume it"):
        TfdsSource("ucf101", "train", str(tmp_path))


# ------------------------------------------------------------ prepare at K400 size: bounded, resumable

NUM_MANY = 240


@pytest.fixture(scope="module")
def many_videos(tmp_path_factory):
    """A few hundred tiny real videos in a PaddleVideo list (labels 0..100)."""
    root = tmp_path_factory.mktemp("many")
    lines = []
    for i in range(NUM_MANY):
        media.write_video(_mkdir(root / "v") / f"{i:03d}.mp4", "mpeg4",
                          media.frames(4, 32, 32, seed=i))
        lines.append(f"v/{i:03d}.mp4 {i % 101}\n")
    (root / "train.list").write_text("".join(lines))
    return root


def _mkdir(path):
    os.makedirs(path, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def many_prepared(many_videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("many_out")
    result = prepare("ucf101", str(many_videos), str(out), "frames", num_workers=2, window=3)
    return result, out


def test_bounded_map_takes_items_only_as_results_are_taken():
    import concurrent.futures

    from ppsn.data.prepare import bounded_map

    pulled = []

    def items():
        for i in range(50):
            pulled.append(i)
            yield i

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for handed, (item, result) in enumerate(bounded_map(abs, items(), 3, pool)):
            assert result == item == handed
            assert len(pulled) - handed <= 3  # pool.map would have pulled all 50 at once


def test_prepare_keeps_a_bounded_window_of_videos_in_flight(many_prepared):
    result, out = many_prepared
    assert result.written == {"train": NUM_MANY} and not result.report
    assert result.max_in_flight == 3
    # Shards are streamed by ppsn's writer: TFDS's shuffler, which spills splits over 1 GB
    # through tf.io.gfile (TensorFlow), is never used.
    assert "tensorflow_datasets.core.shuffle" not in sys.modules
    source = TfdsSource("ucf101", "train", str(out), "frames")
    assert [source[i]["video_id"] for i in (0, 239)] == ["000", "239"]  # in list order
    assert [source[i]["label"] for i in (0, 150)] == [0, 49]


def test_prepare_resumes_after_a_kill_without_redoing_finished_shards(many_videos, many_prepared,
                                                                      tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ppsn.data.prepare", "--dataset", "ucf101", "--manual_dir",
           str(many_videos), "--data_dir", str(out), "--num_workers", "1", "--shard_mb", "0.05"]
    incomplete = out / "ucf101" / "frames" / "2.0.0.incomplete"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while (len(list(incomplete.glob("train-*.done.json"))) < 4 and proc.poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(incomplete.glob("train-*.done.json"))
    assert len(done) >= 4 and not (out / "ucf101" / "frames" / "2.0.0").exists(), \
        "the run was not interrupted"
    inodes = [os.stat(incomplete / json.loads(p.read_text())["file"]).st_ino for p in done]

    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"({len(done)} shards already written)" in resumed.stderr
    assert f"train: {NUM_MANY} videos (" in resumed.stdout
    final = out / "ucf101" / "frames" / "2.0.0"
    assert not incomplete.exists() and not list(final.glob("*.done.json"))
    shards = sorted(final.glob("ucf101-train.array_record-*"))
    # The finished shards were renamed into the dataset, not written again.
    assert [os.stat(p).st_ino for p in shards[:len(done)]] == inodes
    # Same dataset as one uninterrupted run.
    a = TfdsSource("ucf101", "train", str(out), "frames")
    b = TfdsSource("ucf101", "train", str(many_prepared[1]), "frames")
    assert list(a.video_ids) == list(b.video_ids) and (a.labels == b.labels).all()
    assert (a.num_frames == b.num_frames).all()
    for i in range(0, NUM_MANY, 7):
        assert list(a[i]["jpegs"]) == list(b[i]["jpegs"])


def test_changed_inputs_restart_the_interrupted_run_and_say_why(many_videos, tmp_path, capsys):
    from ppsn.data.tfds import writer
    from ppsn.data.tfds.base import Entry
    from ppsn.data.tfds.encode import encode_entry

    final = writer.dataset_dir(str(tmp_path), "ucf101", "frames")
    entries = {"train": [Entry("x", 1, video_path=str(many_videos / "v" / "000.mp4"))]}
    interrupted = writer.DatasetWriter(final, "ucf101", "frames", None, 101,
                                       writer.fingerprint("frames", None, entries), 1)
    part = interrupted.split("train")
    part.write(entries["train"][0], encode_entry(entries["train"][0], "frames"))
    assert part.shards == 1  # closed: a killed run would resume after it
    result = prepare("ucf101", str(many_videos), str(tmp_path), "frames")
    assert "the inputs changed since the interrupted run" in result.restart_reason
    assert "starting over" in capsys.readouterr().err
    assert result.written == {"train": NUM_MANY} and not result.resumed


def test_force_replaces_only_a_dataset_ppsn_prepared(tmp_path):
    manual = tmp_path / "lists"
    _video(str(manual / "v" / "a.mp4"))
    (manual / "train.list").write_text("v/a.mp4 3\n")
    first = prepare("ucf101", str(manual), str(tmp_path / "out"), "videos")
    assert first.written == {"train": 1}
    _video(str(manual / "v" / "b.mp4"), seed=1)
    (manual / "train.list").write_text("v/a.mp4 3\nv/b.mp4 4\n")
    assert prepare("ucf101", str(manual), str(tmp_path / "out"), "videos").already
    # A --force run that fails keeps the old dataset.
    (manual / "train.list").write_text("v/missing.mp4 3\n")
    with pytest.raises(ValueError, match="no video of ucf101/videos could be written"):
        prepare("ucf101", str(manual), str(tmp_path / "out"), "videos", force=True)
    assert len(TfdsSource("ucf101", "train", str(tmp_path / "out"), "videos")) == 1
    (manual / "train.list").write_text("v/a.mp4 3\nv/b.mp4 4\n")
    again = prepare("ucf101", str(manual), str(tmp_path / "out"), "videos", force=True)
    assert again.written == {"train": 2}
    assert len(TfdsSource("ucf101", "train", str(tmp_path / "out"), "videos")) == 2
    assert not os.path.exists(again.data_dir + ".old") and not os.path.exists(
        again.data_dir + ".incomplete")
    # Anything else at that path is never replaced, even with --force.
    other = tmp_path / "other" / "ucf101" / "videos" / "2.0.0"
    os.makedirs(other)
    (other / "notes.txt").write_text("mine")
    done = subprocess.run([sys.executable, "-m", "ppsn.data.prepare", "--dataset", "ucf101",
                           "--manual_dir", str(manual), "--data_dir", str(tmp_path / "other"),
                           "--config", "videos", "--force"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 2 and "is not a dataset ppsn prepared" in done.stderr
    assert (other / "notes.txt").read_text() == "mine" and len(os.listdir(other)) == 1
