"""data.prepare's exit statuses (ppsn.cli): 0 written, 1 written with skipped files, 2 nothing
written (one line on stderr)."""

import os
import subprocess
import sys

from tests.data import media


def _prepare(*args):
    return subprocess.run([sys.executable, "-m", "ppsn.data.prepare", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_prepare_exit_statuses(tmp_path):
    missing = _prepare("--dataset", "ucf101", "--manual_dir", tmp_path / "nope", "--data_dir",
                       tmp_path / "out", "--config", "videos")
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr == f"error: --manual_dir {tmp_path / 'nope'} does not exist\n"

    manual = tmp_path / "ucf"
    lists = manual / "ucfTrainTestlist"
    os.makedirs(lists)
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 YoYo\n")
    (lists / "trainlist01.txt").write_text("YoYo/v_YoYo_g01_c01.avi 2\n")
    (lists / "testlist01.txt").write_text("YoYo/v_YoYo_g02_c01.avi\nYoYo/v_YoYo_g03_c01.avi\n")
    for name in ("v_YoYo_g01_c01.avi", "v_YoYo_g02_c01.avi"):
        os.makedirs(manual / "UCF-101" / "YoYo", exist_ok=True)
        media.write_video(str(manual / "UCF-101" / "YoYo" / name), "mpeg4", media.frames(10))
    done = _prepare("--dataset", "ucf101", "--manual_dir", manual, "--data_dir",
                    tmp_path / "out", "--config", "videos", "--num_workers", "1")
    assert done.returncode == 1, done.stderr[-2000:]  # written, one file skipped
    assert "skipped: 1" in done.stdout and "missing video file" in done.stdout
