"""The few-shot segmentation evaluation protocol: metrics and benchmark runs."""

from .metrics import SegmentationMeter

__all__ = ["SegmentationMeter"]
