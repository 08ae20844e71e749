"""Inference: preprocessing, the support cache, thresholding and outputs at the original size."""

from .pipeline import DiffewSOutput, DiffewSPipeline
from .speed import SpeedOptions

__all__ = ["DiffewSOutput", "DiffewSPipeline", "SpeedOptions"]
