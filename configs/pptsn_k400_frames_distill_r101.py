"""PP-TSN R50 on Kinetics-400 frames, distilled from a frozen PP-TSN R101 teacher (``kd``).

    python -m ppsn.main --config=configs/pptsn_k400_frames_distill_r101.py --workdir=output/ppTSN_kd

The teacher is a ResNet101-vd TSN trained on K400 with ppsn, e.g.
``--config=configs/pptsn_k400_frames.py --config.model.depth=101`` (its ``best/``), or a
PaddleVideo R101 TSN converted with ``python -m ppsn.convert.paddle --depth 101``. The student
starts from the ImageNet ResNet50_vd backbone as in the plain recipe; the loss is the recipe's
label-smoothed CE plus ``w * T^2 * KL(teacher || student)`` at T=4, w=1. Use
``--config.distill.teacher_depth=152`` for an R152 teacher, ``--config.distill.mode=dml`` to let
both models learn (PaddleVideo's DML).
"""

from ppsn.recipe import pptsn_config


def get_config():
    config = pptsn_config()
    config.distill.mode = "kd"
    config.distill.teacher_depth = 101
    config.distill.teacher_checkpoint = "checkpoints/ppTSN_k400_r101"
    config.distill.temperature = 4.0
    config.distill.weight = 1.0
    config.lock()
    return config
