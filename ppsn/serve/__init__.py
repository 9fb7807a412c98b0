"""Serving an exported model (``python -m ppsn.export``): backends and the video predictor.

Nothing here imports jax or flax (the ``xla`` backend imports jax only when chosen), so an ONNX
Runtime / OpenVINO serving host needs neither.
"""
