"""Paddle checkpoint import: safety of the reader, key mapping, and parity with PaddleVideo."""

import os
import pickle
import pickletools
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from ppsn import checkpoint
from ppsn.convert.paddle import (CheckpointMismatchError, UnsafePickleError, load_pdparams,
                                 to_flax)
from ppsn.models import TSN, ResNetVd


def _nhwc(x):
    return np.ascontiguousarray(np.asarray(x).transpose(0, 1, 3, 4, 2))  # [N,T,C,H,W] -> NTHWC


@pytest.fixture(scope="module")
def state(decompressed):
    return load_pdparams(decompressed["model"])


@pytest.fixture(scope="module")
def variables(state):
    return to_flax(state, depth=50)


# --------------------------------------------------------------------------- reading


def _globals_in(path):
    with open(path, "rb") as f:
        ops = list(pickletools.genops(f))
    strings, found = [], set()
    for op, arg, _ in ops:
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            found.add((strings[-2], strings[-1]))
    return found


def test_reads_numpy1_and_numpy2_pickles(decompressed, state):
    # The fixture files were written under numpy 1 and numpy 2: both spellings must load.
    assert ("numpy.core.multiarray", "_reconstruct") in _globals_in(decompressed["model"])
    assert ("numpy._core.multiarray", "_reconstruct") in _globals_in(
        decompressed["imagenet_backbone"])
    imagenet = load_pdparams(decompressed["imagenet_backbone"])
    assert len(state) == 277 and len(imagenet) == 277
    assert "StructuredToParameterName@@" not in state
    assert state["backbone.conv1_1._conv.weight"].shape == (32, 3, 3, 3)
    assert state["head.fc.weight"].shape == (2048, 400)
    assert imagenet["out.weight"].shape == (2048, 1000)
    np.testing.assert_array_equal(state["backbone.bb_3_2.conv2._conv.weight"],
                                  imagenet["bb_3_2.conv2._conv.weight"])


class _Payload:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _malicious_payloads(marker):
    import builtins

    code = f"open({str(marker)!r}, 'w').write('pwned')"
    return {
        "os.system": _Payload(os.system, (f"touch {marker}",)),
        "eval": _Payload(eval, (code,)),
        "subprocess.Popen": _Payload(subprocess.Popen, (["touch", str(marker)],)),
        "builtins.exec": _Payload(builtins.exec, (code,)),
    }


@pytest.mark.parametrize("attack", ["os.system", "eval", "subprocess.Popen", "builtins.exec"])
def test_malicious_pickles_are_refused_and_never_run(tmp_path, attack):
    marker = tmp_path / "payload_ran"
    payload = _malicious_payloads(marker)[attack]
    path = tmp_path / f"{attack}.pdparams"
    with open(path, "wb") as f:
        # A plausible checkpoint with the payload as one of its entries.
        pickle.dump({"conv1_1._conv.weight": np.zeros((32, 3, 3, 3), np.float32),
                     "evil": payload}, f, protocol=4)
    # Sanity: loading this file with the plain unpickler really would run the payload.
    assert any(name in {"system", "eval", "Popen", "exec"} for _, name in _globals_in(path))
    with pytest.raises(UnsafePickleError) as err:
        load_pdparams(path)
    message = str(err.value)
    assert str(path) in message and "refusing to load global" in message
    name = {"os.system": "system", "eval": "eval", "subprocess.Popen": "Popen",
            "builtins.exec": "exec"}[attack]
    assert f".{name}'" in message
    assert not marker.exists(), "the payload ran"


def test_other_bad_files_give_clear_errors(tmp_path):
    truncated = tmp_path / "truncated.pdparams"
    truncated.write_bytes(pickle.dumps({"a": np.ones(3, np.float32)}, protocol=4)[:-10])
    with pytest.raises(ValueError, match="truncated.pdparams: not a readable"):
        load_pdparams(truncated)
    not_dict = tmp_path / "list.pdparams"
    not_dict.write_bytes(pickle.dumps([1, 2], protocol=4))
    with pytest.raises(ValueError, match="list.pdparams: expected a dict"):
        load_pdparams(not_dict)
    objects = tmp_path / "objects.pdparams"
    objects.write_bytes(pickle.dumps({"a": np.array([1, "x"], dtype=object)}, protocol=4))
    with pytest.raises(ValueError, match="objects.pdparams: entry 'a'"):
        load_pdparams(objects)
    with pytest.raises(FileNotFoundError):
        load_pdparams(tmp_path / "missing.pdparams")


# --------------------------------------------------------------------------- mapping


def test_layouts_and_strict_errors(state, variables):
    assert variables["params"]["backbone"]["conv1_1"]["conv"]["kernel"].shape == (3, 3, 3, 32)
    np.testing.assert_array_equal(
        variables["params"]["backbone"]["conv1_1"]["conv"]["kernel"],
        state["backbone.conv1_1._conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], state["head.fc.weight"])
    np.testing.assert_array_equal(variables["batch_stats"]["backbone"]["bb_1_0"]["short"]["bn"]["var"],
                                  state["backbone.bb_1_0.short._batch_norm._variance"])

    broken = dict(state)
    del broken["backbone.bb_2_3.conv1._batch_norm._mean"]
    broken["backbone.bb_9_9.conv0._conv.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    broken["backbone.conv1_2._conv.weight"] = np.zeros((32, 32, 1, 1), np.float32)
    with pytest.raises(CheckpointMismatchError) as err:
        to_flax(broken, depth=50)
    message = str(err.value)
    assert "1 missing: batch_stats/backbone/bb_2_3/conv1/bn/mean" in message
    assert "1 unexpected: backbone.bb_9_9.conv0._conv.weight" in message
    assert "backbone.conv1_2._conv.weight: checkpoint (1, 1, 32, 32) vs model (3, 3, 32, 32)" in message

    with pytest.raises(CheckpointMismatchError, match="missing"):
        to_flax(state, depth=101)
    headless = {k: v for k, v in state.items() if not k.startswith("head.")}
    with pytest.raises(CheckpointMismatchError, match="params/fc/kernel"):
        to_flax(headless, depth=50)
    assert "fc" not in to_flax(headless, depth=50, allow_missing_head=True)["params"]


def test_distillation_checkpoint_picks_student_or_teacher(state):
    distill = {}
    for key, value in state.items():
        part, rest = key.split(".", 1)
        index = "0" if part == "backbone" else "1"
        distill[f"Student.{index}.{rest}"] = value
        distill[f"Teacher.{index}.{rest}"] = value * 2
    student, report = to_flax(distill, depth=50, return_report=True)
    teacher = to_flax(distill, depth=50, submodel="teacher")
    assert report.layout == "distillation/student" and report.num_classes == 400
    assert len(report.dropped) == 277
    np.testing.assert_array_equal(student["params"]["fc"]["kernel"], state["head.fc.weight"])
    np.testing.assert_array_equal(teacher["params"]["fc"]["kernel"], 2 * state["head.fc.weight"])


def _student_only_and_full(state):
    """PaddleVideo's distillation files for ``state`` as the student: the ``*_student.pdparams``
    dict (``0.*`` / ``1.*``) and the full ``Student.*`` / ``Teacher.*`` dict."""
    student_only, full = {}, {}
    for key, value in state.items():
        part, rest = key.split(".", 1)
        index = "0" if part == "backbone" else "1"
        student_only[f"{index}.{rest}"] = value
        full[f"Student.{index}.{rest}"] = value
        full[f"Teacher.{index}.{rest}"] = value * 2
    return student_only, full


def _assert_same_tree(a, b):
    import jax

    flat_a, tree_a = jax.tree_util.tree_flatten(a)
    flat_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for x, y in zip(flat_a, flat_b):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def _write_pdparams(path, state_dict):
    with open(path, "wb") as f:
        pickle.dump(state_dict, f, protocol=4)  # what a .pdparams file is


def test_student_only_distillation_file_equals_the_full_files_student(
        state, variables, tmp_path, pptsn_fixture_dir):
    student_only, full = _student_only_and_full(state)
    assert "0.conv1_1._conv.weight" in student_only and "1.fc.weight" in student_only
    assert "0.bb_3_1.conv1._batch_norm._variance" in student_only
    path = tmp_path / "ppTSN_k400_8_student.pdparams"
    _write_pdparams(path, student_only)
    got, report = to_flax(load_pdparams(path), depth=50, return_report=True)
    assert report.layout == "distillation_student_only"
    assert report.num_classes == 400 and report.num_params == 277 and report.dropped == ()
    from_full = to_flax(full, depth=50, submodel="student")
    _assert_same_tree(got, from_full)
    _assert_same_tree(got, variables)

    x = _nhwc(np.load(pptsn_fixture_dir / "caseA_input.npy"))
    model = TSN(depth=50, num_classes=400)
    logits = np.asarray(model.apply(got, x))
    np.testing.assert_array_equal(logits, np.asarray(model.apply(from_full, x)))
    np.testing.assert_allclose(logits, np.load(pptsn_fixture_dir / "caseA_logits.npy"),
                               rtol=0, atol=2e-4)

    with pytest.raises(ValueError, match="only a distillation student"):
        to_flax(student_only, depth=50, submodel="teacher")
    extra = dict(student_only, **{"2.fc.weight": np.zeros((2048, 400), np.float32)})
    with pytest.raises(CheckpointMismatchError, match=r"\(layout distillation_student_only\).*\n.*"
                                                      r"1 unexpected: 2.fc.weight"):
        to_flax(extra, depth=50)


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("case", ["A", "B"])
def test_logits_and_pooled_match_paddle(pptsn_fixture_dir, variables, case):
    x = _nhwc(np.load(pptsn_fixture_dir / f"case{case}_input.npy"))
    model = TSN(depth=50, num_classes=400)
    logits = np.asarray(model.apply(variables, x))
    pooled = np.asarray(model.apply(variables, x, method=TSN.features))
    for suffix in ("", "_f64"):
        np.testing.assert_allclose(
            logits, np.load(pptsn_fixture_dir / f"case{case}_logits{suffix}.npy"), rtol=0, atol=2e-4)
        np.testing.assert_allclose(
            pooled, np.load(pptsn_fixture_dir / f"case{case}_pooled{suffix}.npy"), rtol=0, atol=5e-4)


def _case_a_featmap(backbone_variables, pptsn_fixture_dir):
    x = _nhwc(np.load(pptsn_fixture_dir / "caseA_input.npy")).reshape(6, 112, 112, 3)
    fmap = ResNetVd(depth=50).apply(backbone_variables, x)
    return np.asarray(fmap).transpose(0, 3, 1, 2)  # NHWC -> NCHW like the fixture


def test_backbone_featmap_matches_paddle(pptsn_fixture_dir, variables):
    backbone = {c: variables[c]["backbone"] for c in ("params", "batch_stats")}
    np.testing.assert_allclose(_case_a_featmap(backbone, pptsn_fixture_dir),
                               np.load(pptsn_fixture_dir / "caseA_backbone_featmap.npy"),
                               rtol=0, atol=5e-3)


def test_imagenet_backbone_reproduces_case_a(decompressed, pptsn_fixture_dir):
    imagenet, report = to_flax(load_pdparams(decompressed["imagenet_backbone"]), depth=50,
                               return_report=True)
    assert report.layout == "imagenet_backbone" and report.num_classes is None
    assert report.dropped == ("out.bias", "out.weight")
    assert set(imagenet["params"]) == {"backbone"}
    backbone = {c: imagenet[c]["backbone"] for c in ("params", "batch_stats")}
    np.testing.assert_allclose(_case_a_featmap(backbone, pptsn_fixture_dir),
                               np.load(pptsn_fixture_dir / "caseA_backbone_featmap.npy"),
                               rtol=0, atol=5e-3)


def test_bf16_logits_close_to_float32(pptsn_fixture_dir, variables):
    x = _nhwc(np.load(pptsn_fixture_dir / "caseA_input.npy"))
    reference = np.load(pptsn_fixture_dir / "caseA_logits.npy")
    model = TSN(depth=50, num_classes=400, dtype=jnp.bfloat16)
    logits = np.asarray(model.apply(variables, x))
    assert logits.dtype == np.float32
    # The fixture's random R50 amplifies any perturbation (float32 with 2^-9 input noise moves
    # the logits by ~0.07); bf16 through 50 layers lands at ~0.12. A porting mistake in the
    # bf16 path (wrong padding, epsilon, pooling) moves them by far more.
    diff = np.abs(logits - reference).max()
    assert diff < 0.25, diff
    assert np.corrcoef(logits.ravel(), reference.ravel())[0, 1] > 0.95


def test_cli_writes_a_loadable_orbax_checkpoint(decompressed, state, tmp_path):
    out = tmp_path / "ppTSN_k400"
    result = subprocess.run(
        [sys.executable, "-m", "ppsn.convert.paddle", "--pdparams", str(decompressed["model"]),
         "--depth", "50", "--output", str(out)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "layout pptsn, 277 tensors" in result.stdout and "400 classes" in result.stdout
    restored, meta = checkpoint.load_variables(out)
    assert meta["depth"] == 50 and meta["num_classes"] == 400 and meta["layout"] == "pptsn"
    np.testing.assert_array_equal(restored["params"]["fc"]["kernel"], state["head.fc.weight"])
    np.testing.assert_array_equal(
        restored["batch_stats"]["backbone"]["bb_3_2"]["conv2"]["bn"]["mean"],
        state["backbone.bb_3_2.conv2._batch_norm._mean"])

    again = subprocess.run(
        [sys.executable, "-m", "ppsn.convert.paddle", "--pdparams", str(tmp_path / "nope.pdparams"),
         "--output", str(tmp_path / "x")], capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "nope.pdparams" in again.stderr
    assert again.stderr.count("\n") == 1  # one line, no traceback


def test_a_wrong_depth_leads_with_what_the_file_holds(decompressed, state, tmp_path):
    """Not 9 KB of key names: the first line says which ResNet the file holds."""
    with pytest.raises(CheckpointMismatchError) as err:
        to_flax(state, depth=18)
    assert err.value.diagnosis.startswith("this checkpoint (layout pptsn) holds a ResNet-50-vd; "
                                          "you asked for depth 18 (convert it with --depth 50)")
    assert str(err.value).splitlines()[0] == err.value.diagnosis
    assert len(err.value.unexpected) > 8 and len(str(err.value)) < 3000  # the lists are cut short
    assert len(str(err.value).splitlines()) <= 4
    result = subprocess.run(
        [sys.executable, "-m", "ppsn.convert.paddle", "--pdparams", str(decompressed["model"]),
         "--depth", "18", "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "holds a ResNet-50-vd; you asked for depth 18" in result.stderr
    assert len(result.stderr) < 400 and not (tmp_path / "out").exists()


def test_a_refusal_names_up_to_five_unexpected_keys(state, tmp_path, capsys):
    from ppsn.convert.paddle import main

    extra = dict(state)
    for i in range(7):
        extra[f"head.extra{i}.weight"] = np.zeros(3, np.float32)
    source = tmp_path / "extra.pdparams"
    _write_pdparams(source, extra)
    assert main(["--pdparams", str(source), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "7 unexpected keys" in err, err
    assert ("unexpected: head.extra0.weight, head.extra1.weight, head.extra2.weight, "
            "head.extra3.weight, head.extra4.weight, ... (2 more)") in err, err
    assert not (tmp_path / "out").exists()


def test_cli_converts_a_student_only_file_and_force_replaces_only_checkpoints(
        decompressed, state, variables, tmp_path, capsys):
    from ppsn.convert.paddle import main

    source = tmp_path / "student.pdparams"
    _write_pdparams(source, _student_only_and_full(state)[0])
    out = tmp_path / "converted"
    result = subprocess.run(
        [sys.executable, "-m", "ppsn.convert.paddle", "--pdparams", str(source),
         "--depth", "50", "--output", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "layout distillation_student_only, 277 tensors" in result.stdout
    restored, meta = checkpoint.load_variables(out)
    assert meta["layout"] == "distillation_student_only" and meta["num_classes"] == 400
    _assert_same_tree(restored, variables)

    # An existing output: refused without --force, replaced with it.
    full = ["--pdparams", str(decompressed["model"]), "--depth", "50", "--output", str(out)]
    assert main(full) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out}: already exists" in err
    assert checkpoint.load_variables(out)[1]["layout"] == "distillation_student_only"
    assert main(full + ["--force"]) == 0
    assert checkpoint.load_variables(out)[1]["layout"] == "pptsn"
    assert sorted(os.listdir(tmp_path)) == ["converted", "student.pdparams"]

    # A folder that is not a ppsn checkpoint is never replaced, even with --force.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    checkpoint.save_variables(mine / "other", restored, {"layout": "pptsn"})
    before = sorted(str(p.relative_to(mine)) for p in mine.rglob("*"))
    capsys.readouterr()
    assert main(["--pdparams", str(decompressed["model"]), "--output", str(mine), "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{mine}: is not a ppsn checkpoint" in err
    assert sorted(str(p.relative_to(mine)) for p in mine.rglob("*")) == before
    assert (mine / "notes.txt").read_text() == "my notes"
    assert checkpoint.load_variables(mine / "other")[1] == {"layout": "pptsn"}
