"""The notebooks run top to bottom on CPU (nbclient, a real Jupyter kernel), with small
settings injected after their ``parameters`` cell, as papermill does."""

import json

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"


def _execute(name, parameters: dict, cwd, timeout=600):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: one cell must be tagged 'parameters'"
    setup = nb.cells[1].source  # installs the checkout it sits in (or PPSN_DIR): no URL
    assert "pip" in setup and "PPSN_DIR" in setup and "http" not in setup
    source = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell("# injected by the test\n" + source))
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def _outputs(nb):
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", "") or json.dumps(out.get("data", {}).get("text/plain", "")))
    return "\n".join(text)


def _has_image(nb):
    return any("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", []))


@pytest.fixture(autouse=True)
def _ppsn_importable(monkeypatch):
    """The kernel runs in a temporary directory: make this checkout's ppsn importable there
    even when it is not pip-installed (then the notebook's install cell does nothing)."""
    import os

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p))


@pytest.mark.slow
def test_quickstart_notebook(tmp_path):
    nb = _execute("quickstart.ipynb", {
        "WORKDIR": str(tmp_path / "run"), "DATA_DIR": str(tmp_path / "toy"),
        "TOY_SETTINGS": {"num_frames": 12, "videos_per_class": {"train": 3, "val": 2, "test": 1}},
        "NUM_EPOCHS": 2, "MAX_STEPS": -1, "BATCH_SIZE": 8, "VALID_BATCH_SIZE": 8, "SHORT_SIZE": 40, "TARGET_SIZE": 32, "TEST_NUM_SEG": 2,
    }, cwd=tmp_path)
    text = _outputs(nb)
    assert "last validation:" in text and "'top1'" in text
    assert "xla: " in text and "onnxruntime: " in text
    assert (tmp_path / "run" / "best" / "ppsn.json").exists()
    assert (tmp_path / "run" / "inference" / "model.onnx").exists()
    assert _has_image(nb)  # the confusion matrix and the frames


def test_paddle_checkpoint_notebook(tmp_path, decompressed, pptsn_fixture_dir, toy_dir):
    nb = _execute("paddle_checkpoint.ipynb", {
        "PDPARAMS": str(decompressed["model"]), "DEPTH": 50, "OUTPUT": str(tmp_path / "ppTSN"),
        "REFERENCE_DIR": str(pptsn_fixture_dir),
        "TEST_CONFIG": str(REPO_ROOT / "configs" / "pptsn_k400_frames.py"),
        "TEST_OVERRIDES": {"data.data_prefix": str(toy_dir),
                           "data.test_list": f"{toy_dir}/test_frames.list",
                           "data.test_num_seg": 2, "data.short_size": 40,
                           "data.target_size": 32, "data.num_workers": 0},
        "TEST_DIR": str(tmp_path / "test"),
    }, cwd=tmp_path)
    text = _outputs(nb)
    assert "max |JAX - Paddle|" in text and "same top-1: True" in text
    summary = json.loads((tmp_path / "test" / "summary.json").read_text())
    assert summary["count"] == 10  # the toy test list, each video once
    assert _has_image(nb)


def test_paddle_checkpoint_notebook_with_its_defaults_says_which_file_to_fetch(tmp_path):
    """A user without the download runs it top to bottom: it downloads nothing, says which
    file to fetch and from where, runs what needs no checkpoint and skips the rest."""
    nb = _execute("paddle_checkpoint.ipynb", {}, cwd=tmp_path)
    text = _outputs(nb)
    assert ("ppTSN_k400.pdparams not found. Download ppTSN_k400.pdparams" in text
            and "https://videotag.bj.bcebos.com/PaddleVideo-release2.2/ppTSN_k400.pdparams" in text)
    assert "TSN ResNet-50-vd, 400 classes:" in text and "skipped: no ppTSN_k400.pdparams" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing downloaded or written
