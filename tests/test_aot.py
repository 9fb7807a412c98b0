"""``python -m ppsn.benchmark aot``: the toy's programs compiled for a TPU topology (libtpu)
and for 8 H100s (the CUDA plugin alone), deviceless, on this CPU.

Each compile runs in a fresh process: the command puts JAX on its CPU backend and lets libtpu
load beside other JAX processes, both fixed at JAX's start-up. The compilers may live in a side
directory, ``PPSN_AOT_PATH`` (as ``.ci/run`` installs them), put on those processes' path.
Skipped, with the reason, where libtpu or the CUDA plugin is not importable, unless
``PPSN_REQUIRE_AOT=1`` (CI), where that fails.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from ppsn.benchmark import hlo
from tests.conftest import REPO_ROOT

FIELDS = ("topology", "chips", "hosts", "per_chip_batch", "hbm_bytes_per_chip",
          "hbm_capacity_bytes", "flops_per_step_per_chip", "bytes_accessed_per_step_per_chip",
          "collectives", "bound_images_per_s_per_chip")
NOT_DATA_PARALLEL = ("all-gather", "all-to-all", "collective-permute", "reduce-scatter")


def _env() -> dict:
    env = dict(os.environ)
    if env.get("PPSN_AOT_PATH"):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"),
                                                          env["PPSN_AOT_PATH"]]))
    return env


def _importable(module: str) -> bool:
    if importlib.util.find_spec(module.split(".")[0]) and importlib.util.find_spec(module):
        return True
    check = f"import importlib.util as u, sys; sys.exit(u.find_spec({module!r}) is None)"
    return subprocess.run([sys.executable, "-c", check], env=_env()).returncode == 0


def _require(module: str, install: str):
    if not _importable(module):
        if os.environ.get("PPSN_REQUIRE_AOT") == "1":
            pytest.fail(f"{module} is not importable and PPSN_REQUIRE_AOT=1 ({install})")
        pytest.skip(f"{module} is not importable ({install})")


def _aot(*args) -> dict:
    out = subprocess.run([sys.executable, "-m", "ppsn.benchmark", "aot",
                          "--config", "configs/pptsn_toy.py", *args], cwd=REPO_ROOT,
                         env=_env(), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _all_reduces(result) -> dict:
    found = result["collectives"]
    assert not set(found) & set(NOT_DATA_PARALLEL), found
    return found["all-reduce"]


@pytest.fixture(scope="module")
def tpu():
    _require("libtpu", "pip install 'ppsn[tpu]'")
    return {sync: _aot("--topology", "v5e:2x2", f"--config.model.sync_bn={sync}")
            for sync in (True, False)}


@pytest.mark.slow
def test_toy_train_step_compiles_for_v5e_2x2(tpu):
    result = tpu[True]
    assert set(FIELDS) <= set(result), set(FIELDS) - set(result)
    assert (result["topology"], result["chips"], result["hosts"]) == ("v5e:2x2", 4, 1)
    assert result["per_chip_batch"] == 32 // 8 and result["compute_dtype"] == "bfloat16"
    assert 0 < result["hbm_bytes_per_chip"] < result["hbm_capacity_bytes"] == 16 * 2**30
    assert result["flops_per_step_per_chip"] > 1e9  # R18 at 56 px, 4 clips of 1 frame
    assert result["bytes_accessed_per_step_per_chip"] > 0
    assert result["bound_images_per_s_per_chip"] > 0
    reduces = _all_reduces(result)
    assert set(reduces) == {"f32"}, reduces  # no bf16 gradient all-reduce


@pytest.mark.slow
def test_toy_per_device_batch_norm_on_v5e_keeps_few_all_reduces(tpu):
    sync, local = _all_reduces(tpu[True]), _all_reduces(tpu[False])
    assert set(local) == {"f32"}
    assert local["f32"]["count"] <= 10 and local["f32"]["count"] <= sync["f32"]["count"] / 4
    assert local["f32"]["bytes"] < sync["f32"]["bytes"]


@pytest.mark.slow
def test_toy_train_step_compiles_for_8_h100_in_bf16():
    _require("jax_plugins.xla_cuda12", "pip install 'ppsn[gpu-compile]'")
    result = _aot("--topology", "8xh100", "--config.amp=true")
    assert (result["topology"], result["chips"], result["hosts"]) == ("8xh100", 8, 1)
    assert result["device_kind"] == "NVIDIA H100 80GB HBM3"
    assert 0 < result["hbm_bytes_per_chip"] < result["hbm_capacity_bytes"]
    assert result["flops_per_step_per_chip"] > 1e9
    assert result["flops_source"].startswith("XLA's count")
    reduces = _all_reduces(result)
    assert set(reduces) == {"f32"}, reduces


def test_collectives_are_read_by_kind_and_dtype_from_hlo_text():
    text = """
  %all-reduce = bf16[8,8]{1,0} all-reduce(%dot), channel_id=1, to_apply=%add
  %ars = (f32[4]{0}, bf16[2,2]{1,0}) all-reduce-start(%a, %b), channel_id=2
  %ard = (f32[4]{0}, bf16[2,2]{1,0}) all-reduce-done(%ars)
  %ag = (f32[2]{0}, f32[16]{0}) all-gather-start(%x), dimensions={0}
  %cp = f32[3]{0:T(128)} collective-permute(%y), source_target_pairs={{0,1}}
  %f = f32[9]{0} fusion(%all-reduce), kind=kLoop, calls=%fused
"""
    assert hlo.collectives(text) == {
        "all-reduce": {"bf16": {"count": 2, "bytes": 8 * 8 * 2 + 4 * 2},
                       "f32": {"count": 1, "bytes": 16}},
        "all-gather": {"f32": {"count": 1, "bytes": 64}},
        "collective-permute": {"f32": {"count": 1, "bytes": 12}}}
    assert hlo.total(hlo.collectives(text), "all-reduce") == 128 + 8 + 16


def test_the_largest_batch_search_follows_the_line_and_never_passes_a_refusal():
    """``--max_batch``'s next compile (ppsn.benchmark.aot.next_batch), on HBM = 1 GiB + 0.1 GiB
    per clip in 16 GiB: from 32 and 64 the line gives 150 -> 144 (a multiple of 8), which fits;
    past a batch over capacity it stays below it; after a refusal it goes halfway back."""
    from ppsn.benchmark import aot

    gib = 2**30
    hbm = {b: int(gib + 0.1 * gib * b) for b in (32, 64, 144, 152)}
    cap = 16 * gib
    assert aot.next_batch({32: hbm[32], 64: hbm[64]}, cap) == 144
    assert aot.next_batch({32: hbm[32], 64: hbm[64], 144: hbm[144]}, cap) is None  # 144 + 8 > 150
    over = {32: hbm[32], 64: hbm[64], 152: hbm[152]}  # 152 clips: 16.2 GiB, over
    assert 64 < aot.next_batch(over, cap) < 152
    refused = {32: hbm[32], 64: hbm[64], 160: None}
    assert aot.next_batch(refused, cap) == 112
    assert aot.next_batch({32: hbm[32]}, cap) == 64
    assert aot.next_batch({32: 17 * gib}, cap) is None
    # HBM that falls as the batch grows (the TPU compiler rematerializing, seen on v5p at 968
    # and 1072 clips): the line points nowhere sensible, the step is at most MAX_GROWTH x.
    flat = {968: int(90.87 * gib), 1072: int(86.40 * gib)}
    assert aot.next_batch(flat, 95 * gib) == aot.MAX_GROWTH * 1072


def test_a_v4_topology_has_one_device_per_chip():
    """libtpu's deviceless v4 devices are TensorCores (two per chip); a v4 VM runs one device
    per chip (megacore), so that is what ``aot`` compiles: v4:2x2x1 is 4 chips on 1 host."""
    _require("libtpu", "pip install 'ppsn[tpu]'")
    code = ("import os, json; os.environ['ALLOW_MULTIPLE_LIBTPU_LOAD'] = '1'; import jax; "
            "jax.config.update('jax_platforms', 'cpu'); from ppsn.benchmark import chips; "
            "t = chips.get_topology('v4:2x2x1'); print(json.dumps([t.chips, t.hosts]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [4, 1]
