"""retain_freed: freed buffers are reused instead of faulted in again (counted page faults, not
time), and every batch-making process gets the setting."""

import json
import subprocess
import sys

import grain
import numpy as np
import pytest

from ppsn.data import host_memory, loading

# A fresh process that only decodes (as a Grain worker does): 8 batches of 8 train clips.
_CLIPS = r"""
import json, resource, sys
import numpy as np
from ppsn.benchmark import timing
from ppsn.data import host_memory
from ppsn.data.clips import ClipSpec, load_clip

ok = host_memory.retain_freed(int(sys.argv[1]))
record = timing.record_for(sys.argv[2])
spec, rng = ClipSpec("train", 3, 256, 224), np.random.default_rng(0)
batch = lambda: np.stack([load_clip(record, spec, rng) for _ in range(8)])
batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    batch()
print(json.dumps({"ok": ok, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults_per_clip(retain_mb: int, frames: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CLIPS, str(retain_mb), frames], check=True,
                         capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["faults"] /= 64
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_retained_memory_takes_far_fewer_page_faults_per_clip(tmp_path):
    from ppsn.benchmark import timing

    frames = timing.benchmark_video(str(tmp_path), "frames", num_frames=24)  # 340x256 JPEGs
    default, retained = _faults_per_clip(0, frames), _faults_per_clip(64, frames)
    assert retained["ok"] and not default["ok"]
    # Where this was written: ~220 faults per clip with glibc's defaults (every frame buffer
    # mapped afresh), ~2 with freed buffers kept.
    assert retained["faults"] * 10 < default["faults"], (default, retained)


def test_retain_freed_rejects_negative_budgets():
    with pytest.raises(ValueError, match="retain_freed_mb must be >= 0"):
        host_memory.retain_freed(-1)
    with pytest.raises(ValueError, match="retain_freed_mb must be >= 0"):
        loading.Loader(retain_freed_mb=-2)


def _worker_settings(i):
    import cv2

    from ppsn.data import decode

    return np.array([cv2.getNumThreads(), decode._THREADS or -1,
                     host_memory._applied or 0], np.int32)


@pytest.mark.parametrize("threads,retain", [(1, 64), (3, 0)])
def test_library_threads_and_retained_memory_are_set_in_every_worker(threads, retain):
    ds = grain.MapDataset.range(8).map(_worker_settings).batch(1)
    it = loading.to_iterator(ds, loading.Loader(num_workers=2, decode_threads=threads,
                                                  prefetch_batches=0, retain_freed_mb=retain))
    seen = {tuple(b[0].tolist()) for b in it}
    assert seen == {(threads, threads, retain)}  # OpenCV's pool, FFmpeg's threads, malloc
