"""ppsn: PaddleVideo's PP-TSN in JAX/Flax."""

__version__ = "0.1.0"
