import hashlib

from ppsn.data import toy
from ppsn.data.lists import ListFileSource


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != toy.MARKER:
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_generation_is_deterministic_and_complete(tmp_path):
    small = {"train": 2, "val": 1, "test": 1}
    toy.generate(str(tmp_path / "a"), num_frames=6, videos_per_class=small)
    toy.generate(str(tmp_path / "b"), num_frames=6, videos_per_class=small)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    root = tmp_path / "a"
    labels = (root / "label_list.txt").read_text().splitlines()
    assert labels[0] == "0 warm_circle" and len(labels) == 10
    for split, n in small.items():
        for fmt in ("frames", "videos"):
            src = ListFileSource(str(root / f"{split}_{fmt}.list"), fmt, str(root), 10)
            assert len(src) == 10 * n and not src.skipped
            assert sorted({r["label"] for r in src}) == list(range(10))
    assert len(list((root / "frames" / "train_warm_circle_000").glob("img_*.jpg"))) == 6


def test_different_seeds_differ_and_regeneration_is_skipped(tmp_path):
    small = {"train": 1, "val": 0, "test": 0}
    toy.generate(str(tmp_path / "a"), seed=0, num_frames=4, videos_per_class=small)
    toy.generate(str(tmp_path / "b"), seed=1, num_frames=4, videos_per_class=small)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "b")
    video = tmp_path / "a" / "videos" / "train_warm_circle_000.mp4"
    stamp = video.stat().st_mtime_ns
    toy.generate(str(tmp_path / "a"), seed=0, num_frames=4, videos_per_class=small)
    assert video.stat().st_mtime_ns == stamp
