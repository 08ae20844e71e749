"""Inference: preprocessing, the support cache, thresholding and outputs at the original size."""

from .pipeline import DiffewSOutput, DiffewSPipeline

__all__ = ["DiffewSOutput", "DiffewSPipeline"]
