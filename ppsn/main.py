"""ppsn's main entry point.

    python -m ppsn.main --config=configs/pptsn_k400_frames.py --workdir=output/ppTSN [--mode=train]
    python -m ppsn.main --config=configs/pptsn_k400_frames.py --mode=test --weights=DIR [--workdir=OUT]

Any config field can be overridden: ``--config.batch_size=64 --config.amp=True``. Training
validates during training by default (``--config.validate=False`` turns it off), resumes from
``--workdir`` automatically, and keeps the best model in ``WORKDIR/best``.
"""

import logging
import os

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "ml_collections config file", lock_config=True)
flags.DEFINE_string("workdir", None, "where checkpoints, logs and the best model go")
flags.DEFINE_enum("mode", "train", ["train", "test"], "train (with validation) or test")
flags.DEFINE_string("weights", None, "test mode: checkpoint directory to evaluate (a converted "
                    "checkpoint, a run's best/ or a training workdir)")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every save step at INFO
    if FLAGS.mode == "train":
        if not FLAGS.workdir:
            raise app.UsageError("--workdir is required for training")
        from ppsn.train.loop import train_and_evaluate

        train_and_evaluate(FLAGS.config, FLAGS.workdir)
    else:
        if not FLAGS.weights:
            raise app.UsageError("--weights is required for --mode=test")
        from ppsn.test_mode import run_test

        run_test(FLAGS.config, FLAGS.weights,
                 FLAGS.workdir or os.path.join(FLAGS.weights, "test"))


if __name__ == "__main__":
    app.run(main)
