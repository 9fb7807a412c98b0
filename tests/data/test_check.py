import os
import shutil
import subprocess
import sys

from tests.data import media


def test_check_cli_finds_every_kind_of_bad_entry(toy_dir, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(toy_dir / "frames", root / "frames")
    shutil.copytree(toy_dir / "videos", root / "videos")
    videos = [line.split()[0] for line in (toy_dir / "val_videos.list").read_text().splitlines()]
    open(root / videos[0], "wb").close()
    media.truncate(root / videos[1], 0.3)
    (root / videos[2]).write_bytes(os.urandom(4096))
    os.remove(root / videos[3])
    (root / "videos.list").write_text("\n".join(f"{v} 0" for v in videos) + "\nbroken-line\n")
    result = subprocess.run(
        [sys.executable, "-m", "ppsn.data.check", "--list", str(root / "videos.list"),
         "--format", "videos", "--data_prefix", str(root)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"{len(videos) - 4} ok, 5 bad" in result.stdout
    report = (root / "videos.list.check.tsv").read_text().splitlines()
    assert report[0] == "entry\treason" and len(report) == 6
    assert any("missing video file" in r for r in report)
    assert any("empty video file" in r for r in report)

    frames = [line for line in (toy_dir / "val_frames.list").read_text().splitlines()]
    first_dir = frames[0].split()[0]
    os.remove(root / first_dir / "img_00012.jpg")  # fewer frames than listed
    (root / frames[1].split()[0] / "img_00003.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    gray_dir = frames[2].split()[0]
    rgb = media.frames(1, 128, 96)[0]
    media.write_jpeg(str(root / gray_dir / "img_00001.jpg"), rgb, "L")  # fine: grayscale is OK
    (root / "frames.list").write_text("\n".join(frames[:5]) + "\nx 3 99\n")
    result = subprocess.run(
        [sys.executable, "-m", "ppsn.data.check", "--list", str(root / "frames.list"),
         "--format", "frames", "--data_prefix", str(root), "--num_classes", "10",
         "--report", str(tmp_path / "r.tsv")],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "3 ok, 3 bad" in result.stdout
    text = (tmp_path / "r.tsv").read_text()
    assert "missing frame file img_00012.jpg (list says 12 frames, found 11)" in text
    assert "corrupt or unsupported" in text and "label 99 out of range" in text


def test_check_cli_fails_only_when_it_cannot_run(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ppsn.data.check", "--list",
                             str(tmp_path / "missing.list"), "--format", "videos"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "list file not found" in result.stderr
