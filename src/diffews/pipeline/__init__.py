"""Inference: preprocessing, the support cache, thresholding and outputs at the original size."""

from .pipeline import ClassesOutput, DiffewSOutput, DiffewSPipeline
from .speed import SpeedOptions

__all__ = ["ClassesOutput", "DiffewSOutput", "DiffewSPipeline", "SpeedOptions"]
