"""ppsn's main entry point.

    python -m ppsn.main --config=configs/pptsn_k400_frames.py --workdir=output/ppTSN [--mode=train]
    python -m ppsn.main --config=configs/pptsn_k400_frames.py --mode=test --weights=DIR [--workdir=OUT]

Any config field can be overridden: ``--config.batch_size=64 --config.amp=True``. Training
validates during training by default (``--config.validate=False`` turns it off), resumes from
``--workdir`` automatically, and keeps the best model in ``WORKDIR/best``.

Exit codes (:mod:`ppsn.cli`): 0 done; 1 test mode scored some videos -1 (undecodable) or
skipped list lines; 2 a usage or config error (one line on stderr, found before the first step
or video by :mod:`ppsn.preflight`); 143 / 130 training stopped by SIGTERM / SIGINT after saving a
checkpoint of the step it reached (:mod:`ppsn.train.preemption`; the same command resumes).
"""

import logging

from absl import app, flags
from ml_collections import config_flags

from ppsn import cli, paths

config_flags.DEFINE_config_file("config", None, "ml_collections config file", lock_config=True)
flags.DEFINE_string("workdir", None, "where checkpoints, logs and the best model go")
flags.DEFINE_enum("mode", "train", ["train", "test"], "train (with validation) or test")
flags.DEFINE_string("weights", None, "test mode: checkpoint directory to evaluate (a converted "
                    "checkpoint, a run's best/ or a training workdir)")
flags.DEFINE_bool("force", False, "test mode: replace the reports of an earlier test in the "
                  "output directory (anything else there is never replaced)")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def run(argv) -> int:
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every save step at INFO
    config = cli.config_flag(FLAGS)
    if FLAGS.workdir:
        paths.check_usable_dir(FLAGS.workdir, "--workdir")
    if FLAGS.mode == "train":
        if not FLAGS.workdir:
            raise cli.UserError("--workdir is required for training")
        from ppsn.train import preemption
        from ppsn.train_mode import train_and_evaluate

        try:
            train_and_evaluate(config, FLAGS.workdir)
        except preemption.Stopped as e:  # a checkpoint of that step was saved (logged)
            return e.exit_code
        return cli.OK
    if not FLAGS.weights:
        raise cli.UserError("--weights is required for --mode=test")
    from ppsn.test_mode import run_test

    summary = run_test(config, FLAGS.weights,
                       FLAGS.workdir or paths.join(FLAGS.weights, "test"), force=FLAGS.force)
    bad = summary["failed"] + summary["skipped_lines"]
    return cli.SOME_INPUTS_BAD if bad else cli.OK


def main(argv):
    return cli.run(run, argv)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_absl_flags)
