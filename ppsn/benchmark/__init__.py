"""Benchmarks, one module per benchmark; each prints a final JSON line with its figures.

    python -m ppsn.benchmark pipeline --mode train|valid|test [--data PATH] [--workers N] ...
    python -m ppsn.benchmark train_step --depth 50 --batch 4 --num_seg 3 --size 224 ...
    python -m ppsn.benchmark loop [--depth 18 --batch 8 --size 56 --steps 20 --workers N]
    python -m ppsn.benchmark eval --depth 50 --num_seg 25 [--videos N] [--data PATH]
    python -m ppsn.benchmark predict --backend openvino --precision bf16 ...
    python -m ppsn.benchmark complexity --config configs/pptsn_k400_frames.py [--depth 101]
    python -m ppsn.benchmark distill [--teacher DIR] [--seeds 0,1,2] [--epochs N] ...

Every benchmark runs the production code path (the Grain pipelines, ``steps.jit_steps`` with a
task, test mode's scoring function, the predictor) and compares against a baseline run in the
same process where it reports a ratio. See each module's docstring for its figures.
"""
