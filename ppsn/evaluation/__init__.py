"""Evaluation: scoring a dataset into a ledger of per-video results
(:mod:`ppsn.evaluation.scoring`), reducers from per-video results to metrics
(:mod:`ppsn.evaluation.metrics`), the per-video score files test mode writes and ``ppsn.fuse``
reads (:mod:`ppsn.evaluation.scores`) and the reports beside them
(:mod:`ppsn.evaluation.reports`). Only ``scoring`` uses jax."""
