"""The toy recipe with a frozen teacher (``kd``): the toy run's best model teaches a fresh student.

    python -m ppsn.main --config=configs/pptsn_toy.py --workdir=output/toy          # the teacher
    python -m ppsn.main --config=configs/pptsn_toy_distill.py --workdir=output/toy_kd

The student (ResNet-18-vd from scratch, like the teacher) trains for 10 epochs instead of 30;
``--config.distill.mode=dml`` trains student and teacher together instead.
"""

from ppsn.recipe import toy_config


def get_config():
    config = toy_config()
    config.num_epochs = 10
    config.distill.mode = "kd"
    config.distill.teacher_depth = 18
    config.distill.teacher_checkpoint = "output/toy/best"
    config.distill.temperature = 4.0
    config.distill.weight = 1.0
    config.lock()
    return config
