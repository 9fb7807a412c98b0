import os
import shutil

import numpy as np
import pytest

from ppsn.data import pipeline
from ppsn.data.clips import ClipSpec, load_clip
from ppsn.data.lists import ListFileSource

SPEC = ClipSpec("train", num_seg=3, short_size=64, target_size=48)


@pytest.fixture(scope="module")
def train_frames(toy_dir):
    return ListFileSource(str(toy_dir / "train_frames.list"), "frames", str(toy_dir), 10)


def _stream(ds, n):
    return [ds[i] for i in range(n)]


def test_batches_are_uint8_with_labels_and_indices(train_frames):
    ds = pipeline.train_dataset(train_frames, SPEC, 4, seed=0, process_index=0, process_count=1)
    batch = ds[0]
    assert batch["frames"].shape == (4, 3, 48, 48, 3) and batch["frames"].dtype == np.uint8
    assert batch["label"].dtype == np.int32 and batch["index"].dtype == np.int32
    for i, label in zip(batch["index"], batch["label"]):
        assert train_frames[int(i)]["label"] == label
    assert batch["mask"].all() and (batch["replaced"] == 0).all()


def test_epochs_are_reshuffled_and_cover_everything(train_frames):
    n = len(train_frames)
    ds = pipeline.train_dataset(train_frames, SPEC, 1, seed=3, num_epochs=2,
                                process_index=0, process_count=1)
    order = [int(ds[i]["index"][0]) for i in range(2 * n)]
    assert sorted(order[:n]) == list(range(n)) and sorted(order[n:]) == list(range(n))
    assert order[:n] != order[n:]
    again = pipeline.train_dataset(train_frames, SPEC, 1, seed=3, num_epochs=2,
                                   process_index=0, process_count=1)
    np.testing.assert_array_equal(again[5]["frames"], ds[5]["frames"])  # deterministic
    other = pipeline.train_dataset(train_frames, SPEC, 1, seed=4, num_epochs=2,
                                   process_index=0, process_count=1)
    assert [int(other[i]["index"][0]) for i in range(n)] != order[:n]


def test_process_shards_do_not_overlap_and_rebuild_the_global_stream(train_frames):
    single = pipeline.train_dataset(train_frames, SPEC, 1, seed=1, num_epochs=1,
                                    process_index=0, process_count=1)
    shards = [pipeline.train_dataset(train_frames, SPEC, 1, seed=1, num_epochs=1,
                                     process_index=p, process_count=3) for p in range(3)]
    n = len(train_frames)
    per = n // 3
    seen = [[int(s[i]["index"][0]) for i in range(per)] for s in shards]
    assert len(set(sum(seen, []))) == 3 * per  # no overlap
    for p in range(3):
        for i in range(per):
            # Element j*3+p of the global stream, with the same augmentation.
            np.testing.assert_array_equal(shards[p][i]["frames"], single[i * 3 + p]["frames"])


@pytest.mark.parametrize("workers", [0, 2])
def test_iterator_state_restores_the_exact_position(train_frames, workers):
    ds = pipeline.train_dataset(train_frames, SPEC, 2, seed=0, process_index=0, process_count=1)
    it = pipeline.to_iterator(ds, workers)
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    resumed = pipeline.to_iterator(ds, workers)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


@pytest.mark.parametrize("processes,batch", [(1, 4), (3, 4), (8, 1), (2, 7)])
def test_eval_scores_every_video_exactly_once(toy_dir, processes, batch):
    source = ListFileSource(str(toy_dir / "val_videos.list"), "videos", str(toy_dir))
    spec = ClipSpec("valid", 3, 64, 48)
    steps, seen = set(), []
    for p in range(processes):
        ds = pipeline.eval_dataset(source, spec, batch, process_index=p, process_count=processes)
        steps.add(len(ds))
        for b in ds:
            assert b["frames"].shape == (batch, 3, 48, 48, 3)
            seen += b["index"][b["mask"]].tolist()
            assert (b["index"][~b["mask"]] == -1).all()
    assert len(steps) == 1  # every process runs the same number of steps
    assert sorted(seen) == list(range(len(source)))


def test_test_mode_batches_carry_ten_crops(toy_dir):
    source = ListFileSource(str(toy_dir / "test_frames.list"), "frames", str(toy_dir))
    ds = pipeline.eval_dataset(source, ClipSpec("test", 2, 64, 48), 3, process_index=0,
                               process_count=1)
    assert ds[0]["frames"].shape == (3, 20, 48, 48, 3)


def _broken_copy(toy_dir, tmp_path):
    """A copy of the toy train list whose entries 1, 4 and 6 are broken in different ways."""
    root = tmp_path / "broken"
    shutil.copytree(toy_dir / "frames", root / "frames")
    shutil.copytree(toy_dir / "videos", root / "videos")
    lines = (toy_dir / "train_videos.list").read_text().splitlines()
    open(root / lines[1].split()[0], "wb").close()  # zero bytes
    with open(root / lines[4].split()[0], "wb") as f:
        f.write(os.urandom(3000))  # garbage
    os.remove(root / lines[6].split()[0])  # missing
    (root / "train.list").write_text("\n".join(lines) + "\n")
    return root


def test_bad_training_samples_are_replaced_counted_and_logged(toy_dir, tmp_path, caplog):
    root = _broken_copy(toy_dir, tmp_path)
    source = ListFileSource(str(root / "train.list"), "videos", str(root))
    skip_log = str(tmp_path / "skips.jsonl")
    ds = pipeline.train_dataset(source, SPEC, 1, seed=0, num_epochs=1, process_index=0,
                                process_count=1, skip_log=skip_log)
    batches = [ds[i] for i in range(len(ds))]
    assert len(batches) == len(source)  # nothing lost: every position yields a clip
    assert sum(int(b["replaced"][0]) for b in batches) == 3
    entries = pipeline.read_skip_log(skip_log)
    assert sorted(e["index"] for e in entries) == [1, 4, 6]
    reasons = {e["index"]: e["reason"] for e in entries}
    assert "empty video" in reasons[1] and "cannot open" in reasons[4]
    assert reasons[6] == "missing video file"
    assert "bad sample (train)" in caplog.text
    summary = pipeline.summarize_skips(entries)
    assert summary.startswith("3 bad samples (3 distinct files)")
    # Replacement is deterministic: the same stream again gives the same clips.
    np.testing.assert_array_equal(ds[0]["frames"], batches[0]["frames"])


def test_bad_eval_samples_are_masked_not_dropped(toy_dir, tmp_path):
    root = _broken_copy(toy_dir, tmp_path)
    source = ListFileSource(str(root / "train.list"), "videos", str(root))
    ds = pipeline.eval_dataset(source, ClipSpec("valid", 3, 64, 48), 4, process_index=0,
                               process_count=1)
    failed, scored = [], []
    for b in ds:
        failed += b["index"][b["failed"]].tolist()
        scored += b["index"][b["mask"]].tolist()
    assert sorted(failed) == [1, 4, 6]
    assert sorted(scored + failed) == list(range(len(source)))


def test_frames_and_videos_give_the_same_clip_geometry(toy_dir):
    frames = ListFileSource(str(toy_dir / "val_frames.list"), "frames", str(toy_dir))
    videos = ListFileSource(str(toy_dir / "val_videos.list"), "videos", str(toy_dir))
    spec = ClipSpec("valid", 3, 64, 48)
    a, b = load_clip(frames[0], spec), load_clip(videos[0], spec)
    assert a.shape == b.shape == (3, 48, 48, 3)
    assert np.abs(a.astype(int) - b).mean() < 12  # JPEG vs MPEG-4 of the same frames
