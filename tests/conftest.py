"""Shared test fixtures: locating PaddleVideo's reference outputs in ../shared/fixtures."""

import lzma
import os
import pathlib
import shutil

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
    """One JAX compilation cache for the session's runs (the commands the tests start use it by
    default, ppsn.compilation): identical programs compile once, not in every test's workdir.
    Tests about the cache itself name their own directory or 'none'. Set by the controller
    before pytest-xdist starts its workers, which inherit it."""
    if hasattr(config, "workerinput") or os.environ.get(_CACHE_ENV):
        return
    import tempfile

    config._ppsn_jax_cache = tempfile.mkdtemp(prefix="ppsn-test-jax-cache-")
    os.environ[_CACHE_ENV] = config._ppsn_jax_cache


def pytest_unconfigure(config):
    path = getattr(config, "_ppsn_jax_cache", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.environ.pop(_CACHE_ENV, None)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Tests that share a module-scoped fixture (a compile, a training run, a converted R50)
    form one xdist group, so that with ``--dist loadgroup`` (setup.cfg) one worker builds the
    fixture once instead of every worker that draws one of them building it again. The
    ``slow`` tests go first, then the groups: the largest units of work first, so that the two
    workers finish together instead of one running a long unit alone at the end."""
    grouped = set()
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        if any(d.scope == "module" for chain in defs for d in chain):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
            grouped.add(item.nodeid)
    # a stable sort: within each class the tests keep their order
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None,
                                 item.nodeid not in grouped))


def shared_fixtures_dir() -> pathlib.Path:
    env = os.environ.get("PPSN_FIXTURES")
    return pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "fixtures"


def _in_ci() -> bool:
    """CI (``.ci/run``) sets PPSN_REQUIRE_FIXTURES=1: there a missing fixture or runtime fails."""
    return os.environ.get("PPSN_REQUIRE_FIXTURES") == "1"


def require_fixture(relpath: str) -> pathlib.Path:
    """Path of a fixture file; skips (or, with PPSN_REQUIRE_FIXTURES=1 as in CI, fails) if absent."""
    path = shared_fixtures_dir() / relpath
    if not path.exists():
        msg = f"PaddleVideo fixture {path} not found (set PPSN_FIXTURES to the fixtures folder)"
        if _in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def require_module(name: str):
    """``pytest.importorskip`` that fails instead under CI (PPSN_REQUIRE_FIXTURES=1), where
    ``pip install -e ".[test]"`` installs every runtime the tests use."""
    try:
        return __import__(name)
    except ImportError as e:
        msg = f"{name} is not installed ({e}); pip install -e '.[test]'"
        if _in_ci():
            pytest.fail(msg)
        pytest.skip(msg, allow_module_level=True)


def skip_unless_cpu_bf16() -> None:
    """Skip a bf16 serving test on a CPU without bf16 instructions (AVX512-BF16 or AMX, read
    from /proc/cpuinfo; elsewhere OpenVINO's own report), saying so in the skip reason. On a
    CPU that has them the test runs, so a backend that refuses bf16 there fails it."""
    try:
        with open("/proc/cpuinfo") as f:
            has_bf16 = bool(set(f.read().split()) & {"avx512_bf16", "amx_bf16"})
    except OSError:
        import openvino

        has_bf16 = "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if not has_bf16:
        pytest.skip("bf16 not tested: this CPU has no AVX512-BF16 or AMX (OpenVINO bf16 is "
                    "refused on it by design)")


def zero_variables(depth: int, num_classes: int):
    """A ResNet-``depth``-vd TSN's variables, every array zeros (float32, the shapes of
    ``ppsn.models.tsn.variable_shapes``: nothing is compiled). For checkpoints whose shapes alone
    matter (a ResNet-34 where a ResNet-18 is expected, a head of another class count);
    compiling a real initialization of each such model costs seconds for nothing."""
    import numpy as np
    from flax.traverse_util import unflatten_dict

    from ppsn.models.tsn import variable_shapes

    return unflatten_dict({path: np.zeros(shape, np.float32)
                           for path, shape in variable_shapes(depth, num_classes).items()})


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


@pytest.fixture(scope="session")
def gcs_server():
    """A GCS-compatible server on 127.0.0.1 (``tests.gcs_server``) for this test process; the
    environment points gcsfs, TensorStore and ArrayRecord (and the commands the tests start)
    at it."""
    import importlib.util

    for name in ("gcsfs", "gcp_storage_emulator"):
        # found, not imported: gcsfs reads its settings (tests.gcs_server.env_for) on import
        if importlib.util.find_spec(name) is None:
            require_module(name)
    from tests.gcs_server import GcsServer

    server = GcsServer().start()
    yield server
    server.stop()


@pytest.fixture
def gcs_dir(gcs_server, request):
    """A fresh ``gs://ppsn-test/<test>-<id>`` prefix for one test."""
    import uuid

    from tests.gcs_server import BUCKET

    import re

    name = re.sub(r"[^\w-]", "_", request.node.name)[:40]
    return f"gs://{BUCKET}/{name}-{uuid.uuid4().hex[:8]}"
