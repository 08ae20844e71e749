"""The few-shot segmentation evaluation protocol: metrics and benchmark runs."""

from .evaluate import EvaluationSettings, format_table, run_evaluation
from .metrics import SegmentationMeter

__all__ = ["EvaluationSettings", "SegmentationMeter", "format_table", "run_evaluation"]
