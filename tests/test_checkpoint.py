"""Variables checkpoints: what ``force`` may replace, and replacing atomically."""

import os

import numpy as np
import pytest

from ppsn import checkpoint


def _variables(value):
    return {"params": {"fc": {"kernel": np.full((2, 3), value, np.float32)}},
            "batch_stats": {"bn": {"mean": np.full((3,), value, np.float32)}}}


def _snapshot(root):
    """relative path -> bytes of every file under ``root`` (directories as None)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = None
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def _assert_holds(directory, value):
    variables, meta = checkpoint.load_variables(directory)
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], np.full((2, 3), value))
    np.testing.assert_array_equal(variables["batch_stats"]["bn"]["mean"], np.full((3,), value))
    assert meta == {"value": value}
    # nothing left beside it
    assert sorted(os.listdir(os.path.dirname(directory))) == [os.path.basename(directory)]


def test_force_replaces_a_checkpoint_and_nothing_else(tmp_path):
    ckpt = tmp_path / "ckpts" / "model"
    checkpoint.save_variables(ckpt, _variables(1.0), {"value": 1.0})
    with pytest.raises(FileExistsError, match="already exists"):
        checkpoint.save_variables(ckpt, _variables(2.0), {"value": 2.0})
    _assert_holds(str(ckpt), 1.0)
    checkpoint.save_variables(ckpt, _variables(2.0), {"value": 2.0}, force=True)
    _assert_holds(str(ckpt), 2.0)

    # A folder of the user's: notes and another checkpoint inside. Never wiped.
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("do not delete")
    checkpoint.save_variables(folder / "other", _variables(3.0), {"value": 3.0})
    before = _snapshot(folder)
    with pytest.raises(FileExistsError) as err:
        checkpoint.save_variables(folder, _variables(4.0), {"value": 4.0}, force=True)
    assert str(err.value).startswith(f"{folder}: is not a ppsn checkpoint (no ppsn.json)")
    assert "\n" not in str(err.value)
    assert _snapshot(folder) == before
    assert sorted(os.listdir(tmp_path)) == ["ckpts", "mine"]

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError, match="is not a directory"):
        checkpoint.save_variables(a_file, _variables(4.0), {"value": 4.0}, force=True)
    assert a_file.read_text() == "x"

    empty = tmp_path / "empty"
    empty.mkdir()
    checkpoint.save_variables(empty, _variables(5.0), {"value": 5.0}, force=True)
    assert checkpoint.load_variables(empty)[1] == {"value": 5.0}


def test_a_failed_save_keeps_the_old_checkpoint(tmp_path):
    ckpt = tmp_path / "model"
    checkpoint.save_variables(ckpt, _variables(1.0), {"value": 1.0})
    # The Orbax tree is written, then the metadata cannot be: the old checkpoint survives.
    with pytest.raises(TypeError, match="not JSON serializable"):
        checkpoint.save_variables(ckpt, _variables(2.0), {"value": object()}, force=True)
    _assert_holds(str(ckpt), 1.0)


def test_a_save_killed_half_way_through_a_bucket_swap_does_not_block_the_next(tmp_path):
    """In a bucket a move is a copy, marker last: a save killed while copying its new version
    in leaves a partial ``model`` (no ppsn.json) beside the complete ``model.ppsn-old`` and
    ``model.ppsn-tmp``. The next save (a resumed run's new best) replaces it; the partial copy
    goes and the complete old one stays until the swap (seen in tests/test_gcs.py's kill)."""
    import shutil

    ckpt = tmp_path / "model"
    checkpoint.save_variables(ckpt, _variables(1.0), {"value": 1.0})
    shutil.copytree(ckpt, str(ckpt) + ".ppsn-old")
    shutil.copytree(ckpt, str(ckpt) + ".ppsn-tmp")
    (ckpt / "ppsn.json").unlink()  # the copy into place stopped before its marker
    checkpoint.save_variables(ckpt, _variables(2.0), {"value": 2.0}, force=True)
    _assert_holds(str(ckpt), 2.0)
    # A folder without the marker and no copy of ours beside it is still never replaced.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a ppsn checkpoint"):
        checkpoint.save_variables(other, _variables(3.0), {"value": 3.0}, force=True)


def test_a_failed_swap_puts_the_old_checkpoint_back(tmp_path, monkeypatch):
    ckpt = tmp_path / "model"
    checkpoint.save_variables(ckpt, _variables(1.0), {"value": 1.0})
    rename = os.rename

    def failing_rename(src, dst):
        if str(src).endswith(".ppsn-tmp"):
            raise OSError(f"cannot rename {src}")
        rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="cannot rename"):
        checkpoint.save_variables(ckpt, _variables(2.0), {"value": 2.0}, force=True)
    monkeypatch.setattr(os, "rename", rename)
    variables, meta = checkpoint.load_variables(ckpt)
    assert meta == {"value": 1.0}
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], np.full((2, 3), 1.0))
    # the next save clears what the failed one left and succeeds
    checkpoint.save_variables(ckpt, _variables(2.0), {"value": 2.0}, force=True)
    _assert_holds(str(ckpt), 2.0)
