"""Evaluation: reducers from per-video results to metrics (:mod:`ppsn.evaluation.metrics`) and
the per-video score files test mode writes and ``ppsn.fuse`` reads (:mod:`ppsn.evaluation.scores`).
numpy only (no jax)."""
