"""Validation during training: mIoU / FB-IoU on fixed episodes, and image panels for the tracker."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from ..modeling import DiffewSModel
from ..processing.masks import binarize, mask_to_image


@dataclass
class ValidationResult:
    """Scores (``miou``, ``fbiou`` in 0..100) and panels ``(H, W', 3)`` uint8: support | query | truth | prediction."""

    metrics: dict[str, float]
    panels: list[np.ndarray] = field(default_factory=list)


@torch.no_grad()
def validate(model: DiffewSModel, dataset: Dataset, num_panels: int = 0) -> ValidationResult:
    """Segment every episode of `dataset` (all its shots) with the model's default binarisation and score them."""
    from ..evaluation.metrics import SegmentationMeter

    predictions, targets, class_ids, panels = [], [], [], []
    for index in range(len(dataset)):
        item = dataset[index]
        support = model.encode_support(item["support_images"][None].to(model.device), item["support_masks"][None].to(model.device))
        mask_latents = model.predict_mask_latents(model.encode_images(item["query_image"][None]), support)
        probabilities = model.decode_probabilities(mask_latents).cpu()
        predicted, _ = binarize(probabilities, model.config.threshold, model.config.threshold_mode)
        predictions.append(predicted[0, 0])
        targets.append(item["query_mask"][0].long())
        class_ids.append(int(item["class_id"]))
        if index < num_panels:
            panels.append(_panel(item, predicted[0].float()))
    meter = SegmentationMeter(sorted(set(class_ids)))
    meter.update(torch.stack(predictions), torch.stack(targets), torch.tensor(class_ids))
    scores = meter.compute()
    return ValidationResult({"miou": float(scores["miou"]), "fbiou": float(scores["fbiou"])}, panels)


def _panel(item: dict, prediction: torch.Tensor) -> np.ndarray:
    """First support image, query, ground-truth and predicted masks side by side, uint8 ``(H, 4W, 3)``."""
    tiles = [
        item["support_images"][0],
        item["query_image"],
        mask_to_image(item["query_mask"][None])[0],
        mask_to_image(prediction[None])[0],
    ]
    row = torch.cat([tile.float().cpu() for tile in tiles], dim=2)
    return ((row.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
