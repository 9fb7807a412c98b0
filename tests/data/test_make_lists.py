"""python -m ppsn.data.make_lists on class folders made of the toy videos and frames."""

import shutil

import pytest

from ppsn import cli
from ppsn.data import make_lists
from ppsn.data.labels import read_label_list
from ppsn.data.lists import ListFileSource


@pytest.fixture(scope="module")
def tree(toy_dir, tmp_path_factory):
    """DIR/<class>/<video>: the toy's 6 videos (train, val, test) per class, plus clutter."""
    root = tmp_path_factory.mktemp("classes")
    frames_root = root / "frames_tree"
    root = root / "videos_tree"
    names = read_label_list(str(toy_dir / "label_list.txt"))
    for split in ("train", "val", "test"):
        for line in (toy_dir / f"{split}_videos.list").read_text().splitlines():
            path, label = line.split()
            (root / names[int(label)]).mkdir(parents=True, exist_ok=True)
            shutil.copy(toy_dir / path, root / names[int(label)])
        for line in (toy_dir / f"{split}_frames.list").read_text().splitlines():
            path, _, label = line.split()
            shutil.copytree(toy_dir / path, frames_root / names[int(label)] / path.split("/")[-1])
    (root / "README.txt").write_text("not a class folder")
    (root / names[0] / "notes.txt").write_text("not a video")
    (root / names[1] / "my clip.mp4").write_bytes(b"")  # a space: a list file cannot hold it
    (frames_root / names[0] / "empty").mkdir()
    return root, frames_root, names


def _read(out, split, fmt="videos"):
    return (out / f"{split}_{fmt}.list").read_text().splitlines()


def test_lists_are_stratified_reproducible_and_relative_to_root(tree, tmp_path, capsys):
    root, _, names = tree
    argv = ["--root", str(root), "--val_fraction", "0.2", "--test_fraction", "0.2"]
    assert make_lists.main(argv + ["--output_dir", str(tmp_path / "a")]) == cli.SOME_INPUTS_BAD
    out = capsys.readouterr()
    assert "10 classes, 40 train, 10 val, 10 test, 3 skipped" in out.out
    assert "notes.txt: not a video file" in out.err and "my clip.mp4: whitespace" in out.err
    a = tmp_path / "a"
    assert read_label_list(str(a / "label_list.txt")) == sorted(names)
    for split, per_class in (("train", 4), ("val", 1), ("test", 1)):
        source = ListFileSource(str(a / f"{split}_videos.list"), "videos", str(root), 10)
        labels = [source[i]["label"] for i in range(len(source))]
        assert sorted(labels) == sorted(list(range(10)) * per_class)  # stratified
        assert all((root / line.split()[0]).is_file() for line in _read(a, split))
        assert all(line.split()[0].split("/")[0] == sorted(names)[int(line.split()[1])]
                   for line in _read(a, split))
    assert make_lists.main(argv + ["--output_dir", str(tmp_path / "b")]) == cli.SOME_INPUTS_BAD
    assert make_lists.main(argv + ["--output_dir", str(tmp_path / "c"), "--seed", "1"]) == 1
    assert all(_read(a, s) == _read(tmp_path / "b", s) for s in ("train", "val", "test"))
    assert _read(a, "val") != _read(tmp_path / "c", "val")  # another seed, another split
    assert sorted(_read(a, "val") + _read(a, "test") + _read(a, "train")) == \
        sorted(_read(tmp_path / "c", "val") + _read(tmp_path / "c", "test")
               + _read(tmp_path / "c", "train"))


def test_frame_folders_are_listed_with_their_frame_counts(tree, toy_dir, tmp_path, capsys):
    _, frames_root, _ = tree
    assert make_lists.main(["--root", str(frames_root), "--output_dir", str(tmp_path),
                            "--format", "frames", "--val_fraction", "0"]) == cli.SOME_INPUTS_BAD
    assert "empty: not a frame folder" in capsys.readouterr().err
    lines = _read(tmp_path, "train", "frames")
    assert len(lines) == 60 and not (tmp_path / "val_frames.list").exists()
    source = ListFileSource(str(tmp_path / "train_frames.list"), "frames", str(frames_root), 10)
    assert {source[i]["num_frames"] for i in range(len(source))} == {12}


def test_bad_inputs_are_one_line_errors_and_nothing_is_overwritten(tree, tmp_path, capsys):
    root = tree[0]

    def error(*argv):
        code = make_lists.main(list(argv))
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == cli.USAGE and len(lines) == 1, lines
        return lines[0]

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "some_class").mkdir()
    assert error("--root", str(tmp_path / "empty"), "--output_dir", str(tmp_path / "o")) == (
        f"error: --root {tmp_path / 'empty'}: no videos in class folders (expected "
        f"{tmp_path / 'empty'}/<class>/<video file>)")
    assert error("--root", str(root), "--output_dir", str(tmp_path / "o"),
                 "--val_fraction", "0.6", "--test_fraction", "0.5").endswith(
        "nothing left to train on")
    assert not (tmp_path / "o").exists()
    out = tmp_path / "lists"
    out.mkdir()
    (out / "train_videos.list").write_text("mine\n")
    assert error("--root", str(root), "--output_dir", str(out)).endswith(
        "train_videos.list: already exists (pass --force to overwrite the list files)")
    assert (out / "train_videos.list").read_text() == "mine\n"
    assert make_lists.main(["--root", str(root), "--output_dir", str(out), "--force"]) == 1
    assert len(_read(out, "train")) == 50 and len(_read(out, "val")) == 10


@pytest.mark.slow
def test_three_commands_from_a_folder_of_videos_to_a_trained_model(tree, tmp_path, capsys):
    """The README's: make_lists, train on the lists (the toy recipe), TenCrop test."""
    from ppsn import test_mode, train_mode
    from ppsn.recipe import toy_config

    root, lists = tree[0], tmp_path / "lists"
    assert make_lists.main(["--root", str(root), "--output_dir", str(lists),
                            "--val_fraction", "0.2", "--test_fraction", "0.2"]) == 1
    config = toy_config()
    config.data.generate_toy = False
    config.data.format = "videos"
    config.data.data_prefix = str(root)
    config.data.train_list = str(lists / "train_videos.list")
    config.data.val_list = str(lists / "val_videos.list")
    config.data.test_list = str(lists / "test_videos.list")
    config.data.label_list = str(lists / "label_list.txt")
    config.model.num_classes = 10
    config.data.short_size, config.data.target_size, config.data.test_num_seg = 40, 32, 1
    config.batch_size, config.valid_batch_size, config.num_epochs = 8, 10, 1
    last = train_mode.train_and_evaluate(config, str(tmp_path / "run"))
    assert last["count"] == 10 and (tmp_path / "run" / "best").is_dir()
    summary = test_mode.run_test(config, str(tmp_path / "run" / "best"), str(tmp_path / "test"))
    assert summary["count"] == 10 and summary["failed"] == 0
    assert 0 <= summary["mean_class_top1"] <= 1
