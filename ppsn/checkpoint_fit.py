"""Whether a checkpoint fits a model: one diagnosis ("holds a ResNet-34-vd; the run needs a
ResNet-18-vd", "has 5 classes; ..."), worded for who asks (pre-flight, test mode and export,
initialization, a distillation teacher, the Paddle converter).
"""

from __future__ import annotations

from ppsn import checkpoint, paths

# "NAME holds a ResNet-H-vd" and "NAME has N classes" against what each caller wants (W).
WANTS = {
    "run": ("{name} holds a ResNet-{held}-vd; the run needs a ResNet-{want}-vd",
            "{name} has {held} classes; the model has {want}"),
    "config": ("{name} holds a ResNet-{held}-vd; the config asks for ResNet-{want}-vd "
               "(--config.model.depth={held}, or other weights)",
               "{name} has {held} classes; the config has {want} (--config.model.num_classes="
               "{held}, or other weights)"),
    "model": ("{name} holds a ResNet-{held}-vd; the model is a ResNet-{want}-vd "
              "(--config.model.depth={want})", ""),
    "convert": ("{name} holds a ResNet-{held}-vd; you asked for depth {want} (convert it with "
                "--depth {held})", ""),
    "teacher": ("{name} holds a ResNet{held}-vd but --config.distill.teacher_depth={want}",
                "the teacher {name} has {held} classes; the student has {want}: a kd teacher "
                "must be a full model of the same classes"),
}


def held_model(variables=None, meta=None) -> tuple[int | None, int | None]:
    """``(depth, num_classes)`` a checkpoint holds: what its ``meta`` records, else what its
    ``variables`` show (None: unknown, or no classifier)."""
    from ppsn.models import plan

    meta = meta or {}
    depth, classes = meta.get("depth"), meta.get("num_classes")
    if depth is None and variables is not None:
        depth = plan.depth_of_variables(variables)
    bias = _head_bias(variables)
    if classes is None and bias is not None:
        classes = int(bias.shape[0])
    return depth, classes


def _head_bias(variables):
    return None if variables is None else variables.get("params", {}).get("fc", {}).get("bias")


def misfits(name: str, depth: int, num_classes: int | None = None, *, meta=None,
            variables=None, wants: str = "run", whole: bool = False) -> list[str]:
    """Why the checkpoint ``name`` (its ``meta`` and/or ``variables``) is not a ResNet-``depth``
    -vd of ``num_classes`` classes (None: any), worded for ``wants`` (:data:`WANTS`). ``whole``
    (test, export): the first problem of depth, classifier, classes and every array's shape."""
    held_depth, held_classes = held_model(variables, meta)
    depth_words, classes_words = WANTS[wants]
    problems = []
    if held_depth is not None and int(held_depth) != depth:
        problems.append(depth_words.format(name=name, want=depth, held=held_depth))
        if whole:
            return problems
    if whole and _head_bias(variables) is None:
        return [f"{name} has no classifier (an ImageNet backbone?): test and export need a "
                "whole model"]
    if num_classes is not None and held_classes not in (None, num_classes):
        problems.append(classes_words.format(name=name, want=num_classes, held=held_classes))
    if whole and not problems:
        problems += _shape_misfits(name, depth, num_classes, variables)
    return problems


def _shape_misfits(name: str, depth: int, num_classes: int, variables) -> list[str]:
    import jax

    from ppsn.models import tsn

    want = tsn.variable_shapes(depth, num_classes)
    got = {tuple(p.key for p in path): tuple(x.shape)
           for path, x in jax.tree_util.tree_flatten_with_path(variables)[0]}
    differ = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
    if not differ:
        return []
    first = "".join(f"[{k!r}]" for k in differ[0])
    return [f"{name} does not fit the config's ResNet-{depth}-vd TSN: {len(differ)} arrays "
            f"differ, e.g. {first}: checkpoint {got.get(differ[0])} vs model "
            f"{want.get(differ[0])}"]


def variables_problems(field: str, path: str, depth: int, num_classes: int | None = None
                       ) -> list[str]:
    """Why ``--config.FIELD=PATH`` is not a ppsn variables checkpoint holding a
    ResNet-``depth``-vd (of ``num_classes`` classes when given); read from its ``ppsn.json``."""
    name = f"--config.{field}={path}"
    if not paths.exists(path):
        return [f"{name} does not exist (convert a PaddleVideo / PaddleClas file with: python -m "
                f"ppsn.convert.paddle --pdparams FILE --depth {depth} --output {path})"]
    meta = checkpoint.read_meta(path)
    if meta is None:
        return [f"{name} is not a ppsn checkpoint (no variables/ and ppsn.json)"]
    return misfits(name, depth, num_classes, meta=meta)
