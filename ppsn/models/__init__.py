"""Models: the ResNet-vd backbone and the TSN recognizer."""

from ppsn.models.resnet_vd import STAGE_BLOCKS, ResNetVd, feature_dim
from ppsn.models.tsn import TSN, chunked_logits

__all__ = ["ResNetVd", "TSN", "STAGE_BLOCKS", "chunked_logits", "feature_dim"]
