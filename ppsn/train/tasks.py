"""Training objectives, one class each: plain training, ``kd`` and ``dml`` distillation.

A task owns everything that differs between objectives, so that the step, the loop, the best
model, test mode and export never ask which objective runs:

* its models and their variables: ``scratch_variables(seed)`` (and so the state's shapes for a
  restore), ``initial_variables()`` for a new run;
* ``constants``: arrays the step reads but never changes (the ``kd`` teacher's variables); the
  jitted step takes them as a replicated argument that is never donated or differentiated;
* ``loss(params, batch_stats, images, targets, rng, constants, batch_axes)`` inside the step
  (on one device's shard of the batch, ``batch_axes`` the mesh axes it is split over), returning
  ``(loss, (logits of the served model, new batch_stats, parts))``; ``log_parts`` are the parts
  the log line shows;
* which variables are served (``best/``, test mode, export): ``serving_key`` names the subtree
  of the state that holds them (``None``: the whole state), recorded in every checkpoint's
  metadata so that a reader can pick them without knowing the task.

Config section ``distill`` (see :func:`ppsn.recipe.pptsn_config`) chooses: ``mode`` ``''``
(plain), ``'kd'`` or ``'dml'``; ``teacher_depth``, ``teacher_checkpoint`` (a ppsn checkpoint such
as a run's ``best/``, or a converted PaddleVideo model), ``temperature`` T and ``weight`` w.

* ``kd`` (Hinton et al.): the teacher runs in eval mode (running BN statistics, no dropout) on
  the student's normalized, mixed-up input; loss per example
  ``CE_smoothed(student) + w T^2 KL(softmax(teacher / T) || softmax(student / T))``.
* ``dml`` (PaddleVideo's DML, as in PP-TSMv2's distillation configs): both models train, each
  with its own CE, plus ``w T^2 (KL(p_s || p_t) + KL(p_t || p_s)) / 2``. The state's params and
  batch statistics are ``{'student': ..., 'teacher': ...}``, so train checkpoints keep both;
  the student is served.

Adding an objective means adding one class here and naming it in ``TASKS``.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np

from ppsn import checkpoint, checkpoint_fit, paths
from ppsn.train import initialize, losses

log = logging.getLogger(__name__)

STUDENT, TEACHER = "student", "teacher"


class Task:
    """Plain training: one TSN, label-smoothed cross-entropy on the mixed-up labels."""

    name = "plain"
    serving_key: str | None = None
    log_parts: tuple[str, ...] = ()

    def __init__(self, config, dtype=None):
        self.config = config
        self.model = initialize.build_model(config, dtype)
        self.num_classes = config.model.num_classes
        self.smoothing = config.loss.label_smoothing
        self.constants: tuple = ()

    # variables ---------------------------------------------------------------------------
    def scratch_variables(self, seed: int):
        """Random variables of the state's tree (what a restore needs the shapes of)."""
        return initialize.scratch_variables(self.model, seed)

    def initial_variables(self):
        """A new run's variables: ``init_from``, else ``pretrained``, else random."""
        return initialize.initial_variables(self.config, self.model)

    # inside the step ---------------------------------------------------------------------
    def cross_entropy(self, logits, targets):
        return jnp.mean(losses.mixed_cross_entropy(logits, targets, self.num_classes,
                                                   self.smoothing))

    def apply_train(self, model, variables, images, rng, batch_axes=None):
        """Training-mode logits and new batch statistics; ``batch_axes``: the ``shard_map``
        axes ``images`` is one shard of (see :class:`ppsn.models.TSN`)."""
        logits, updates = model.clone(batch_axes=batch_axes).apply(
            variables, images, train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
        return logits, updates["batch_stats"]

    def loss(self, params, batch_stats, images, targets, rng, constants, batch_axes=None):
        logits, new_stats = self.apply_train(
            self.model, {"params": params, "batch_stats": batch_stats}, images, rng, batch_axes)
        ce = self.cross_entropy(logits, targets)
        return ce, (logits, new_stats, {"ce": ce})

    # serving -----------------------------------------------------------------------------
    @property
    def serving_model(self):
        return self.model

    def serving_variables(self, params, batch_stats) -> dict:
        return serving_variables({"params": params, "batch_stats": batch_stats},
                                 self.serving_key)

    def meta(self) -> dict:
        """What checkpoints record about the served model and the task."""
        return {"depth": self.config.model.depth, "num_classes": self.num_classes,
                "task": self.name, "serving_key": self.serving_key}

    def describe(self) -> str:
        return f"{self.name} training of ResNet{self.config.model.depth}-vd TSN"

    @classmethod
    def loads_teacher(cls, resuming: bool) -> bool:
        """Whether a run (resuming or not) reads ``distill.teacher_checkpoint``."""
        return False


def serving_variables(variables: dict, serving_key: str | None) -> dict:
    """``{'params', 'batch_stats'}`` of the served model in a state's variables."""
    if serving_key is None:
        return {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    return {k: variables[k][serving_key] for k in ("params", "batch_stats")}


def teacher_model(config, dtype):
    from ppsn.models import tsn

    return tsn.from_config(config, dtype, depth=config.distill.teacher_depth)


def load_teacher_variables(config, teacher) -> dict:
    """The teacher's variables from ``distill.teacher_checkpoint``, checked against its model
    (depth and class count must match; a mismatch names both)."""
    path = config.distill.teacher_checkpoint
    if not paths.exists(path):
        raise FileNotFoundError(
            f"--config.distill.teacher_checkpoint={path} does not exist. Use a ppsn run's best/ "
            f"directory or convert a PaddleVideo model with: python -m ppsn.convert.paddle "
            f"--pdparams FILE --depth {config.distill.teacher_depth} --output {path}")
    loaded, meta = checkpoint.load_variables(path)
    problems = checkpoint_fit.misfits(path, teacher.depth, teacher.num_classes, meta=meta,
                                      variables=loaded, wants="teacher")
    if problems:
        raise ValueError(problems[0])
    if loaded.get("params", {}).get("fc", {}).get("bias") is None:
        raise ValueError(f"the teacher {path} has no classifier; the student has "
                         f"{teacher.num_classes}: a kd teacher must be a full model of the same "
                         "classes")
    fresh = initialize.scratch_variables(teacher, 0)
    return initialize.merge_loaded(fresh, loaded, path)


class KdTask(Task):
    """Knowledge distillation from a frozen teacher (restored once, never trained)."""

    name = "kd"
    log_parts = ("ce", "kd")

    @classmethod
    def loads_teacher(cls, resuming: bool) -> bool:
        return True  # frozen: read by every run, never saved

    def __init__(self, config, dtype=None, teacher_variables=None):
        super().__init__(config, dtype)
        self.teacher = teacher_model(config, self.model.dtype)
        if teacher_variables is None:
            teacher_variables = load_teacher_variables(config, self.teacher)
        self.constants = (teacher_variables,)

    def loss(self, params, batch_stats, images, targets, rng, constants, batch_axes=None):
        (teacher_variables,) = constants
        teacher_logits = jax.lax.stop_gradient(
            self.teacher.apply(teacher_variables, images, train=False))
        ce, (logits, new_stats, _) = super().loss(params, batch_stats, images, targets, rng,
                                                  constants, batch_axes)
        d = self.config.distill
        kd = d.weight * jnp.mean(losses.kd_loss(logits, teacher_logits, d.temperature))
        return ce + kd, (logits, new_stats, {"ce": ce, "kd": kd})

    def describe(self) -> str:
        d = self.config.distill
        return (f"kd distillation: student ResNet{self.config.model.depth}-vd, frozen teacher "
                f"ResNet{d.teacher_depth}-vd from {d.teacher_checkpoint or '(given variables)'}, "
                f"T={d.temperature:g}, w={d.weight:g}")


class DmlTask(Task):
    """Deep mutual learning: student and teacher both train; the student is served."""

    name = "dml"
    serving_key = STUDENT
    log_parts = ("ce", "ce_teacher", "dml")

    @classmethod
    def loads_teacher(cls, resuming: bool) -> bool:
        return not resuming  # a resumed run's teacher is in its train state

    def __init__(self, config, dtype=None):
        super().__init__(config, dtype)
        self.teacher = teacher_model(config, self.model.dtype)

    def scratch_variables(self, seed: int):
        return pair_variables(initialize.scratch_variables(self.model, seed),
                              initialize.scratch_variables(self.teacher, seed + 1))

    def initial_variables(self):
        """The student as a plain run; the teacher from ``teacher_checkpoint`` if set, else
        from scratch."""
        student = initialize.initial_variables(self.config, self.model)
        if self.config.distill.teacher_checkpoint:
            teacher = load_teacher_variables(self.config, self.teacher)
        else:
            teacher = jax.tree.map(np.asarray, initialize.scratch_variables(
                self.teacher, self.config.seed + 1))
        return pair_variables(student, teacher)

    def loss(self, params, batch_stats, images, targets, rng, constants, batch_axes=None):
        s_rng, t_rng = jax.random.split(rng)
        logits, s_stats = self.apply_train(
            self.model, {"params": params[STUDENT], "batch_stats": batch_stats[STUDENT]},
            images, s_rng, batch_axes)
        t_logits, t_stats = self.apply_train(
            self.teacher, {"params": params[TEACHER], "batch_stats": batch_stats[TEACHER]},
            images, t_rng, batch_axes)
        ce, ce_teacher = self.cross_entropy(logits, targets), self.cross_entropy(t_logits, targets)
        d = self.config.distill
        dml = d.weight * jnp.mean(losses.dml_loss(logits, t_logits, d.temperature))
        parts = {"ce": ce, "ce_teacher": ce_teacher, "dml": dml}
        return ce + ce_teacher + dml, (logits, pair(s_stats, t_stats), parts)

    def describe(self) -> str:
        d = self.config.distill
        start = d.teacher_checkpoint or "scratch"
        return (f"dml distillation: student ResNet{self.config.model.depth}-vd and teacher "
                f"ResNet{d.teacher_depth}-vd (from {start}) learn together, "
                f"T={d.temperature:g}, w={d.weight:g}")


def pair(student, teacher) -> dict:
    return {STUDENT: student, TEACHER: teacher}


def pair_variables(student: dict, teacher: dict) -> dict:
    """The DML state's variables: ``{'params': pair, 'batch_stats': pair}``."""
    return {k: pair(student[k], teacher[k]) for k in ("params", "batch_stats")}


# distill.mode -> task class
TASKS = {"": Task, "kd": KdTask, "dml": DmlTask}


def distill_problems(config) -> list[str]:
    """Every problem of the config's ``distill`` section (empty: the task can be built)."""
    from ppsn.checks import Problems, finite
    from ppsn.models.plan import STAGE_BLOCKS

    d, problems = config.distill, Problems()
    if not problems.need(d.mode in TASKS, f"--config.distill.mode must be one of "
                         f"{', '.join(repr(m) for m in TASKS if m)} or '' (off), got {d.mode!r}"):
        return problems
    problems.need(d.mode != "kd" or bool(d.teacher_checkpoint),
                  "--config.distill.mode=kd needs --config.distill.teacher_checkpoint (a ppsn "
                  "checkpoint such as a run's best/, or a converted PaddleVideo model)")
    if d.mode:
        problems.need(finite(d.temperature) and d.temperature > 0,
                      f"--config.distill.temperature={d.temperature!r}: must be finite and > 0")
        problems.need(finite(d.weight) and d.weight >= 0,
                      f"--config.distill.weight={d.weight!r}: must be finite and >= 0")
        problems.need(d.teacher_depth in STAGE_BLOCKS, f"--config.distill.teacher_depth="
                      f"{d.teacher_depth!r}: ResNet-vd depths are "
                      f"{', '.join(map(str, STAGE_BLOCKS))}")
    return problems


def task_class(config) -> type[Task]:
    """The task class the config's ``distill`` section asks for; checks that section
    (``ValueError``: its first problem)."""
    problems = distill_problems(config)
    if problems:
        raise ValueError(problems[0])
    return TASKS[config.distill.mode]


def make_task(config, dtype=None, **kwargs) -> Task:
    """The task of the config (``kwargs`` go to its constructor, e.g. ``teacher_variables``)."""
    return task_class(config)(config, dtype, **kwargs)
