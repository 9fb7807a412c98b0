"""``eval``: test mode's path for single videos (batch 1): the test pipeline's host part
(decoding and scaling the sampled frames, placing them on the canvas), then test mode's
scoring function on the device (TenCrop views, normalization and the model averaging all
``num_seg x 10`` views), on a generated 300-frame 340x256 frames folder (or ``--data``).

The videos go through :func:`ppsn.evaluation.scoring.score_dataset`, each waited for.
Reports ``s_per_video`` (host + device, after one warm-up video) and its host / device parts.
"""

from __future__ import annotations

import tempfile
import time

from ppsn.benchmark import timing


def add_parser(sub):
    e = sub.add_parser("eval", help="TenCrop test time per video (host + device)")
    e.add_argument("--depth", type=int, default=50)
    e.add_argument("--num_seg", type=int, default=25)
    e.add_argument("--videos", type=int, default=2)
    e.add_argument("--data", default=None, help="a frames folder or a video file")
    e.add_argument("--views_per_chunk", type=int, default=None,
                   help="views per model call (0: all at once; default: per backend, 10 on "
                   "CPU, all on GPU/TPU)")
    e.add_argument("--amp", default="auto", help="auto (bf16 on GPU/TPU), true or false")
    return e


class _Clock:
    """Host seconds (making a batch) and device seconds (scoring it, results fetched) over a
    dataset's batches, the first (which compiles) left out."""

    def __init__(self):
        self.host = self.device = 0.0

    def timed(self, ds):
        for i in range(len(ds)):
            t0 = time.perf_counter()
            batch = ds[i]
            t1 = time.perf_counter()
            yield batch  # scored and fetched before the next is asked for
            if i > 0:  # the first video compiles
                self.host += t1 - t0
                self.device += time.perf_counter() - t1


def run(args) -> dict:
    import jax

    from ppsn import backend, parallel
    from ppsn.data import datasets
    from ppsn.evaluation import scoring
    from ppsn.recipe import pptsn_config
    from ppsn.test_mode import score_fn
    from ppsn.train import initialize

    config = pptsn_config()
    config.model.depth = args.depth
    config.data.test_num_seg = args.num_seg
    config.amp = args.amp
    views_per_call = backend.views_per_call(args.views_per_chunk)
    model = initialize.build_model(config)
    variables = initialize.scratch_variables(model, 0)
    mesh = parallel.make_mesh(jax.local_devices()[:1])
    spec = datasets.clip_spec(config.data, "test")
    score = score_fn(model, mesh, spec, views_per_call)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or timing.benchmark_video(tmp, "frames")
        source = timing.RepeatedSource(timing.record_for(data), args.videos + 1)
        ds = datasets.eval_dataset(source, spec, 1, process_index=0, process_count=1)
        clock = _Clock()
        # Test mode's scoring path, each video waited for (lag 0) to time host and device apart.
        scoring.score_dataset(score, variables, clock.timed(ds), len(source), mesh, lag=0)
    host, device = clock.host, clock.device
    n = args.videos
    return {"benchmark": "eval", "depth": args.depth, "num_seg": args.num_seg,
            "views": spec.views, "views_per_chunk": views_per_call, "videos": n,
            "precision": jax.numpy.dtype(model.dtype).name, "conv_impl": model.conv_impl,
            "device": jax.local_devices()[0].device_kind,
            "host_s_per_video": round(host / n, 3), "device_s_per_video": round(device / n, 3),
            "s_per_video": round((host + device) / n, 3),
            "ms_per_view": round(device / n / spec.views * 1e3, 2)}
