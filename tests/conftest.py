"""Shared test fixtures: locating PaddleVideo's reference outputs in ../shared/fixtures."""

import lzma
import os
import pathlib
import shutil

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def shared_fixtures_dir() -> pathlib.Path:
    env = os.environ.get("PPSN_FIXTURES")
    return pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "fixtures"


def require_fixture(relpath: str) -> pathlib.Path:
    """Path of a fixture file; skips (or, with PPSN_REQUIRE_FIXTURES=1 as in CI, fails) if absent."""
    path = shared_fixtures_dir() / relpath
    if not path.exists():
        msg = f"PaddleVideo fixture {path} not found (set PPSN_FIXTURES to the fixtures folder)"
        if os.environ.get("PPSN_REQUIRE_FIXTURES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def pptsn_fixture_dir() -> pathlib.Path:
    return require_fixture("paddle_pptsn_r50")


@pytest.fixture(scope="session")
def decompressed(tmp_path_factory, pptsn_fixture_dir):
    """Decompress the fixture's .pdparams.xz files once per session; returns name -> path."""
    out = tmp_path_factory.mktemp("pdparams")
    paths = {}
    for name in ("model", "imagenet_backbone"):
        dst = out / f"{name}.pdparams"
        with lzma.open(pptsn_fixture_dir / f"{name}.pdparams.xz") as src, open(dst, "wb") as f:
            shutil.copyfileobj(src, f)
        paths[name] = dst
    return paths


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory):
    """A small copy of the embedded toy dataset (real mp4 files and JPEG frame folders)."""
    from ppsn.data import toy

    out = tmp_path_factory.mktemp("toy")
    toy.generate(str(out), num_frames=12, videos_per_class={"train": 3, "val": 2, "test": 1})
    return out


@pytest.fixture(scope="session")
def full_toy_dir(tmp_path_factory):
    """The toy dataset at its default size (240 train / 80 val videos), shorter videos."""
    from ppsn.data import toy

    out = tmp_path_factory.mktemp("toy_full")
    toy.generate(str(out), num_frames=12)
    return out


@pytest.fixture(scope="session")
def toy_tfds_dir(tmp_path_factory, toy_dir):
    """``toy_dir``'s frame folders prepared as a TFDS frames dataset (``ppsn.data.prepare``)."""
    from ppsn.data.prepare import prepare

    out = tmp_path_factory.mktemp("toy_tfds")
    prepare("toy", str(toy_dir), str(out), "frames")
    return out
