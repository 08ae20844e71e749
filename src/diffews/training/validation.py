"""Validation during training: mIoU / FB-IoU on fixed episodes, and image panels for the tracker."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from ..modeling import DiffewSModel
from ..pipeline import DiffewSPipeline
from ..processing.images import working_image_to_array
from ..processing.masks import mask_to_image

EPISODE_KEYS = ("query_image", "query_mask", "support_images", "support_masks", "class_id")


@dataclass
class ValidationResult:
    """Scores (``miou``, ``fbiou`` in 0..100) and panels ``(H, W', 3)`` uint8: support | query | truth | prediction."""

    metrics: dict[str, float]
    panels: list[np.ndarray] = field(default_factory=list)


@torch.no_grad()
def validate(model: DiffewSModel, dataset: Dataset, num_panels: int = 0, batch_size: int = 4) -> ValidationResult:
    """Segment every episode of `dataset` (all its shots) with the model's default binarisation and
    score them as `diffews evaluate` does: against ``"query_target"`` (255 = ignore) where the
    episodes have one, else against ``"query_mask"``; `batch_size` episodes per call."""
    from ..evaluation.evaluate import predict
    from ..evaluation.metrics import SegmentationMeter
    from ..evaluation.predictors import ModelPredictor

    predictor = ModelPredictor(DiffewSPipeline(model))
    threshold, mode = model.config.thresholding()
    items = [dataset[index] for index in range(len(dataset))]
    targets = [_scoring_target(item) for item in items]
    predictions = []
    for start in range(0, len(items), batch_size):
        batch = default_collate([{key: item[key] for key in EPISODE_KEYS} for item in items[start : start + batch_size]])
        predictions += predict(predictor, batch, threshold, mode, sizes=[tuple(t.shape) for t in targets[start : start + batch_size]])
    class_ids = [int(item["class_id"]) for item in items]
    meter = SegmentationMeter(sorted(set(class_ids)))
    for prediction, target, class_id in zip(predictions, targets, class_ids):
        meter.update(prediction[None], target[None], torch.tensor([class_id]))
    scores = meter.compute()
    panels = [_panel(item, prediction[None].float()) for item, prediction in zip(items[:num_panels], predictions)]
    return ValidationResult({"miou": float(scores["miou"]), "fbiou": float(scores["fbiou"])}, panels)


def _scoring_target(item: dict) -> torch.Tensor:
    """An episode's ground truth ``(H, W)``: its ``"query_target"`` (0/1, 255 = ignore) if it has one, else its mask."""
    if "query_target" in item:
        return torch.as_tensor(item["query_target"]).long()
    return item["query_mask"][0].long()


def _panel(item: dict, prediction: torch.Tensor) -> np.ndarray:
    """First support image, query, ground-truth and predicted masks side by side, uint8 ``(H, 4W, 3)``."""
    tiles = [
        item["support_images"][0],
        item["query_image"],
        mask_to_image(item["query_mask"][None])[0],
        mask_to_image(prediction[None])[0],
    ]
    return working_image_to_array(torch.cat([tile.float().cpu() for tile in tiles], dim=2))
