"""Export a trained model as a self-contained ``jax.export`` artifact for ``ppsn.predict``.

    python -m ppsn.export --config=configs/pptsn_k400_frames.py --weights=DIR --output=inference/ppTSN [--onnx]
        [--int8 [--calibration_list=LIST] [--calibration_size=300]]

Writes into ``--output``:

* ``model.jax``: the serialized ``jax.export.Exported`` of ``scores = f(weights, frames)``,
  with ``frames`` uint8 ``[n, views, size, size, 3]`` (TenCrop views of the scaled frames; ``n``
  is symbolic) and ``scores`` the softmax over classes, normalization and the averaging over
  views included, computed in float32; lowered for ``--platforms`` (default ``cpu,cuda,tpu``),
  each with its own convolutions (:func:`ppsn.backend.conv_impl`: matrix products on CPU,
  native convolutions on GPU/TPU; ``lax.platform_dependent`` picks at run time). A platform
  that cannot be lowered is an error naming it, never dropped. Each BatchNorm is folded into
  its convolution (a kernel and a bias per convolution, :mod:`ppsn.models.fold`, as in the
  ONNX graph); ``--nofold_bn`` keeps the statistics and applies them as separate passes;
* ``weights.npz``: the model variables, in the order ``model.jax`` takes them;
* ``model.onnx`` (with ``--onnx``): the same eval graph as an ONNX model (uint8 frames in,
  ``logits`` and ``scores`` out, batch and views symbolic), built from the variables by
  :mod:`ppsn.serve.onnx_graph`, for ``ppsn.predict --backend=onnxruntime|openvino``;
* ``model_int8.xml`` / ``.bin`` (with ``--int8``, which implies ``--onnx``): the ONNX graph
  quantized to int8 by NNCF after training (:mod:`ppsn.serve.quantize`, the stem kept in fp32),
  calibrated on ``--calibration_size`` clips made as predict makes them from
  ``--calibration_list`` (default: the config's training list; :mod:`ppsn.serve.calibration`),
  fed ten views at a time (memory does not grow with the views of a clip),
  for ``ppsn.predict --backend=openvino --precision=int8``;
* ``inference.json``: what predict needs: ``num_seg``, ``views``, ``short_size``,
  ``target_size``, ``sampling``, ``mean``/``std``, ``num_classes``; with ``--int8``, ``int8``:
  what it was calibrated on (list, its sha256, clips, nncf version, layers kept in fp32).

Loading needs neither the model code nor the config: ``jax.export.deserialize`` + numpy.

An existing ``--output`` is refused; ``--force`` replaces it only if it is an earlier export
(it holds ``inference.json``), written beside it and renamed into place. Exit status
(:mod:`ppsn.cli`): 0 exported, 2 with one line on stderr (weights that do not fit the config,
a refused output, a missing ``onnx`` / ``nncf`` package, a calibration list that is missing or
cannot give ``--calibration_size`` clips).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export

from ppsn.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from ppsn.serve.artifact import META_FILE, MODEL_FILE, ONNX_FILE, WEIGHTS_FILE

PLATFORMS = ("cpu", "cuda", "tpu")  # the default targets
# jax.export's platform names -> the backend names ppsn.backend chooses by
BACKEND_OF = {"cpu": "cpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}


class LoweringError(RuntimeError):
    """The model cannot be lowered for one of the requested platforms."""


def check_platforms(platforms) -> list[str]:
    platforms = list(platforms)
    unknown = [p for p in platforms if p not in BACKEND_OF]
    if unknown or not platforms:
        raise LoweringError(f"unknown export platform(s) {', '.join(unknown) or '(none given)'}: "
                            f"choose among {', '.join(BACKEND_OF)}")
    return platforms


def lower(fn, args, platforms):
    """``jax.export`` of ``fn`` for every platform in ``platforms``; one that fails is a
    :class:`LoweringError` naming it (and why), never dropped from the artifact."""
    platforms = check_platforms(platforms)
    try:
        return jax_export.export(jax.jit(fn), platforms=platforms)(*args)
    except Exception as error:  # find which platform(s) failed, to say so
        failures = []
        for platform in platforms:
            try:
                jax_export.export(jax.jit(fn), platforms=[platform])(*args)
            except Exception as e:
                failures.append(f"{platform} ({type(e).__name__}: {e})")
        if not failures:
            raise
        raise LoweringError("cannot lower the model for " + "; ".join(failures)) from error


def clip_meta(config) -> dict:
    """How predict makes the clips of this config's export (test mode: sampling, TenCrop)."""
    from ppsn.data import datasets

    spec = datasets.clip_spec(config.data, "test")
    return {"num_seg": spec.num_seg, "views": spec.views, "short_size": spec.short_size,
            "target_size": spec.target_size, "sampling": spec.sampling or "test"}


def _quantize(onnx_model, calibration) -> tuple:
    """The int8 OpenVINO model and what it was calibrated on (``inference.json``'s ``int8``)."""
    import sys

    from ppsn.serve import quantize

    print(f"int8: calibrating on {calibration.size} clips from {calibration.list_file} "
          f"({len(calibration)} samples of <= {calibration.views_per_sample} views)",
          file=sys.stderr, flush=True)
    model = quantize.quantize(onnx_model, calibration)
    return model, {"file": quantize.INT8_FILE, **calibration.record(), "nncf": quantize.version(),
                   "method": quantize.METHOD, "kept_fp32": list(quantize.DEFAULT_KEEP)}


def _infer_fn(config, treedef, platforms, fold_bn: bool):
    """The served function (weights leaves, uint8 frames -> probabilities) and the conv
    implementation per platform (one branch per implementation, chosen by platform)."""
    from ppsn import backend
    from ppsn.models import tsn

    def infer_with(conv_impl):
        model = tsn.from_config(config, jnp.float32, fold_bn=fold_bn).clone(conv_impl=conv_impl)

        def infer(weights, frames):
            logits = model.apply(jax.tree.unflatten(treedef, weights), normalize(frames),
                                 train=False)
            return jax.nn.softmax(logits, axis=-1)

        return infer

    impls = {p: backend.conv_impl(config.model.conv_impl, BACKEND_OF[p]) for p in platforms}
    branches = {impl: infer_with(impl) for impl in sorted(set(impls.values()))}
    if len(branches) == 1:
        (infer,) = branches.values()
    else:
        def infer(weights, frames):
            return jax.lax.platform_dependent(
                weights, frames, **{p: branches[impl] for p, impl in impls.items()})
    return infer, impls


def _write(output: str, force: bool, exported, leaves, meta: dict, onnx_model,
           int8_model) -> None:
    """Write the export's files into a fresh directory renamed into place (inference.json
    last)."""
    from ppsn import checkpoint, paths

    with checkpoint.replacing(output, force=force, marker=META_FILE,
                              kind="ppsn export") as tmp:
        out = paths.path(tmp)  # local, or in a bucket (files written whole, inference.json last)
        if onnx_model is not None:
            from ppsn.serve import onnx_graph

            with (out / ONNX_FILE).open("wb") as f:
                onnx_graph.save(onnx_model, f)
        if int8_model is not None:
            from ppsn.serve import quantize

            quantize.save(int8_model, out)
        (out / MODEL_FILE).write_bytes(exported.serialize())
        with (out / WEIGHTS_FILE).open("wb") as f:
            np.savez(f, **{f"w{i:04d}": np.asarray(x, np.float32) for i, x in enumerate(leaves)})
        (out / META_FILE).write_text(json.dumps(meta, indent=2))


def export_model(config, variables, output: str, platforms=PLATFORMS,
                 onnx: bool = False, force: bool = False, fold_bn: bool = True,
                 calibration=None) -> dict:
    """Write the export to ``output``: a new directory, or with ``force`` the replacement of an
    earlier export (it holds ``inference.json``; nothing else is ever replaced), written beside
    it and renamed into place, so a failed export leaves the old one as it was. ``fold_bn``:
    ``model.jax`` runs the TSN with each BatchNorm folded into its convolution. With
    ``calibration`` (:class:`ppsn.serve.calibration.CalibrationClips`) it also writes the int8
    OpenVINO model (and model.onnx, which it is made from)."""
    from ppsn.data import datasets
    from ppsn.models import fold

    platforms = check_platforms(platforms)
    served = fold.fold_variables(jax.tree.map(np.asarray, variables)) if fold_bn else variables
    leaves, treedef = jax.tree.flatten(served)
    spec = datasets.clip_spec(config.data, "test")
    infer, impls = _infer_fn(config, treedef, platforms, fold_bn)
    n = jax_export.symbolic_shape("n")[0]
    args = ([jax.ShapeDtypeStruct(np.shape(x), jnp.float32) for x in leaves],
            jax.ShapeDtypeStruct((n, spec.views, spec.target_size, spec.target_size, 3), jnp.uint8))
    exported = lower(infer, args, platforms)
    onnx_model = int8_model = None
    onnx = onnx or calibration is not None
    if onnx:  # built before anything is written: a missing 'onnx' package fails cleanly
        from ppsn.serve import onnx_graph

        onnx_model = onnx_graph.build(jax.tree.map(np.asarray, variables), config.model.depth,
                                      None, spec.target_size, spec.target_size, "uint8")
    meta = {**clip_meta(config), "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "num_classes": config.model.num_classes, "depth": config.model.depth,
            "input": "uint8 [n, views, target_size, target_size, 3], TenCrop order",
            "platforms": list(exported.platforms),
            "conv_impl": {p: impls[p] for p in exported.platforms}, "fold_bn": fold_bn,
            "onnx": ONNX_FILE if onnx_model is not None else None}
    if calibration is not None:
        int8_model, meta["int8"] = _quantize(onnx_model, calibration)
    _write(output, force, exported, leaves, meta, onnx_model, int8_model)
    return meta


def _calibration(config, FLAGS):
    """``--int8``'s calibration clips (``--calibration_list``, by default the config's training
    list), checked before anything is lowered; None without ``--int8``."""
    from ppsn.serve import calibration, quantize

    if not FLAGS.int8:
        if FLAGS.calibration_list:
            raise calibration.CalibrationError("--calibration_list is for --int8 exports")
        return None
    quantize.version()  # a missing nncf / openvino: one line, now
    data, list_file, fmt = config.data, FLAGS.calibration_list, None
    if not list_file:
        if data.source != "list":
            raise calibration.CalibrationError(
                f"--int8: the config's training data is not a list file (data.source="
                f"{data.source}); give --calibration_list=LIST of your videos")
        list_file, fmt = data.train_list, data.format
    records = calibration.read_records(list_file, fmt, data.data_prefix, config.model.num_classes)
    return calibration.CalibrationClips(clip_meta(config), records, FLAGS.calibration_size,
                                        list_file)


def run(argv) -> int:
    import logging

    from absl import flags

    from ppsn import cli, preflight

    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every read at INFO
    FLAGS = flags.FLAGS
    # The weights' depth and classes against the config, before anything is compiled.
    config = cli.config_flag(FLAGS)
    variables, meta = preflight.check(config, "export", 1, weights=FLAGS.weights,
                                      output=FLAGS.output, force=FLAGS.force).weights
    what = meta["path"]
    try:
        calibration = _calibration(config, FLAGS)  # a bad list is refused before lowering
        meta = export_model(config, variables, FLAGS.output, FLAGS.platforms,
                            onnx=FLAGS.onnx, force=FLAGS.force, fold_bn=FLAGS.fold_bn,
                            calibration=calibration)
    except (ImportError, LoweringError) as e:
        raise cli.UserError(str(e)) from None
    print(f"exported {what} to {FLAGS.output} ({', '.join(meta['platforms'])}"
          f"{', onnx' if meta['onnx'] else ''}{', int8' if 'int8' in meta else ''}; "
          f"{meta['views']} views of {meta['target_size']}x{meta['target_size']})")
    return cli.OK


def main(argv):
    from ppsn import cli

    return cli.run(run, argv)


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    from ppsn import cli

    config_flags.DEFINE_config_file("config", None, "ml_collections config file", lock_config=True)
    flags.DEFINE_string("weights", None, "checkpoint directory (converted, best/ or a workdir)")
    flags.DEFINE_string("output", "inference/ppTSN", "output directory")
    flags.DEFINE_list("platforms", list(PLATFORMS), "platforms model.jax is lowered for "
                      f"(among {', '.join(BACKEND_OF)}); one that fails is an error")
    flags.DEFINE_bool("onnx", False, "also write model.onnx for predict's onnxruntime and "
                      "openvino backends (needs pip install 'ppsn[serve]')")
    flags.DEFINE_bool("fold_bn", True, "fold each BatchNorm into its convolution in model.jax "
                      "(--nofold_bn: apply the statistics as separate passes)")
    flags.DEFINE_bool("int8", False, "also write model_int8.xml: the model quantized to int8 "
                      "(NNCF post-training, for predict --backend=openvino --precision=int8; "
                      "implies --onnx)")
    flags.DEFINE_string("calibration_list", None, "with --int8: a PaddleVideo list of videos "
                        "(or frame folders) to calibrate on (default: the config's train_list)")
    flags.DEFINE_integer("calibration_size", 300, "with --int8: calibration clips (one per "
                         "video, made as predict makes them); a list giving fewer is refused")
    flags.DEFINE_bool("force", False, "replace an existing --output if it is an earlier export "
                      "(anything else is never replaced)")
    flags.mark_flags_as_required(["config", "weights"])
    app.run(main, flags_parser=cli.parse_absl_flags)
