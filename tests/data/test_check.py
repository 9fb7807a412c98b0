import os
import shutil
import subprocess
import sys

import numpy as np

from ppsn.data import check
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
    assert result.returncode == 1, result.stderr  # bad entries found: it can gate a job
    assert f"{len(videos) - 4} ok, 5 bad" in result.stdout
    report = (root / "videos.list.check.tsv").read_text().splitlines()
    assert report[:2] == [check.REPORT_HEADER, "entry\treason"] and len(report) == 7
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
    assert result.returncode == 1, result.stderr
    assert "3 ok, 3 bad" in result.stdout
    text = (tmp_path / "r.tsv").read_text()
    assert "missing frame file img_00012.jpg (list says 12 frames, found 11)" in text
    assert "label 99 out of range" in text
    # Reported by file, without object reprs ("<_io.BytesIO object at 0x...>")
    assert "img_00003.jpg: corrupt or unsupported image" in text and " at 0x" not in text

    good = subprocess.run(
        [sys.executable, "-m", "ppsn.data.check", "--list", str(toy_dir / "test_frames.list"),
         "--format", "frames", "--data_prefix", str(toy_dir), "--num_classes", "10",
         "--report", str(tmp_path / "good.tsv")], capture_output=True, text=True, timeout=600)
    assert good.returncode == 0 and "10 ok, 0 bad" in good.stdout, good.stderr


def _check(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "ppsn.data.check", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_check_cli_usage_errors_are_one_line_and_exit_2(toy_dir, tmp_path):
    result = _check("--list", tmp_path / "missing.list", "--format", "videos")
    assert result.returncode == 2 and "list file not found" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr

    # Nothing to check is not a success.
    (tmp_path / "empty.list").write_text("# only a comment\n\n")
    result = _check("--list", tmp_path / "empty.list", "--format", "videos")
    assert result.returncode == 2 and "has no entries: nothing to check" in result.stderr

    # The report path is checked before the pass: no decoding (no progress bar), one line.
    result = _check("--list", toy_dir / "val_videos.list", "--format", "videos",
                    "--data_prefix", toy_dir, "--report", tmp_path / "no" / "such" / "dir.tsv")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--report" in result.stderr and "cannot be written" in result.stderr
    assert "checking" not in result.stderr and result.stdout == ""


def _pipeline_failures(source, specs, rngs=8):
    """Indices of the records the real pipelines cannot make a clip of: training replaces them
    (several seeds, so several random samplings) and test / validation mark them failed."""
    from ppsn.data import datasets

    failed = set()
    for spec in specs:
        if spec.mode == "train":
            for seed in range(rngs):
                loader = datasets.TrainLoader(source, spec)
                for record in source.records:
                    example = loader(record, np.random.default_rng(seed))
                    if example["replaced"]:
                        failed.add(record["index"])
        else:
            loader = datasets.EvalLoader(source, spec)
            for position in range(len(source)):
                if loader(position)["failed"]:
                    failed.add(position)
    return failed


def test_check_finds_every_entry_the_pipelines_would_replace_or_score_minus_1(toy_dir, tmp_path):
    """What check calls good, training never replaces and test mode never scores -1, and what
    the pipelines fail on, check calls bad (here: every kind of damage we can make)."""
    from ppsn.data import check
    from ppsn.data.clips import ClipSpec
    from ppsn.data.lists import ListFileSource

    root = tmp_path / "ds"
    shutil.copytree(toy_dir / "frames", root / "frames")
    lines = (toy_dir / "val_frames.list").read_text().splitlines()[:8]
    dirs = [root / line.split()[0] for line in lines]
    small = media.frames(1, 64, 48)[0]
    media.write_jpeg(str(dirs[0] / "img_00007.jpg"), small)  # one frame of another size
    (dirs[1] / "img_00006.jpg").write_bytes(b"\xff\xd8 not a jpeg")  # a sampled frame
    (dirs[2] / "img_00012.jpg").write_bytes(b"")  # the last frame, never sampled at valid/test
    os.remove(dirs[3] / "img_00003.jpg")
    (root / "frames.list").write_text("\n".join(lines) + "\n")
    source = ListFileSource(str(root / "frames.list"), "frames", str(root), 10)
    specs = [ClipSpec("train", 3, 40, 32), ClipSpec("valid", 3, 40, 32),
             ClipSpec("test", 2, 40, 32, device_crops=True, canvas=64)]

    failed = _pipeline_failures(source, specs)
    num_ok, bad, _ = check.run_check(str(root / "frames.list"), "frames", str(root), 10,
                                     str(tmp_path / "r.tsv"), progress=False, specs=specs)
    flagged = {next(r["index"] for r in source.records if r["frame_dir"] == where)
               for where, _ in bad}
    assert failed <= flagged, (failed, bad)  # nothing the pipelines fail on passes the check
    assert {0, 1, 3} <= failed  # (the damage is real: the pipelines do fail on it)
    assert flagged == {0, 1, 2, 3} and num_ok == 4, bad
    reasons = dict(bad)
    assert "frames of different sizes: img_00007.jpg is 64x48, img_00001.jpg 128x96" in \
        reasons[str(dirs[0])]
    assert reasons[str(dirs[2])].startswith("img_00012.jpg: empty image file")


def test_check_flags_a_line_naming_an_entry_twice(toy_dir, tmp_path):
    from ppsn.data import check
    from ppsn.data.clips import ClipSpec

    lines = (toy_dir / "test_frames.list").read_text().splitlines()[:3]
    first_dir, frames, label = lines[0].split()
    other = (int(label) + 1) % 10
    listed = lines + [lines[0], f"./{first_dir}/ {frames} {other}"]
    (tmp_path / "dup.list").write_text("\n".join(listed) + "\n")
    num_ok, bad, _ = check.run_check(str(tmp_path / "dup.list"), "frames", str(toy_dir), 10,
                                     str(tmp_path / "r.tsv"), progress=False,
                                     specs=[ClipSpec("valid", 1, 40, 32)])
    assert num_ok == 3 and bad == [
        (f"{tmp_path / 'dup.list'}:4", f"duplicate of line 1 (label {label} there too)"),
        (f"{tmp_path / 'dup.list'}:5", f"duplicate of line 1 (label {label} there, {other} here)")]


def test_ctrl_c_is_one_line_and_exit_130(tmp_path):
    """SIGINT while data.check waits for its list (a FIFO no one writes to): no traceback."""
    import signal
    import time

    fifo = tmp_path / "list.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ppsn.data.check", "--list", str(fifo), "--format", "videos",
         "--report", str(tmp_path / "r.tsv")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while True:  # opens (non-blocking) once the check has opened the list to read it
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
    try:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        os.close(fd)
    assert proc.returncode == 130 and err == (
        "error: interrupted (Ctrl-C) before the command finished\n"), err
    assert not (tmp_path / "r.tsv").exists()
