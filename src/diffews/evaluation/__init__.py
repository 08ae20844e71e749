"""The few-shot segmentation evaluation protocol: metrics, predictors (models and baselines) and benchmark runs."""

from .evaluate import EvaluationSettings, format_table, run_evaluation
from .metrics import SegmentationMeter
from .predictors import BASELINES, ModelPredictor, OtherClassSupport, Predictor

__all__ = [
    "BASELINES",
    "EvaluationSettings",
    "ModelPredictor",
    "OtherClassSupport",
    "Predictor",
    "SegmentationMeter",
    "format_table",
    "run_evaluation",
]
