"""Few-shot segmentation metrics (HSNet convention): per-class IoU, mIoU, FB-IoU.

Intersections and unions are summed per class over all episodes of a fold, for the foreground
and for the background; pixels labelled 255 are ignored.

- per-class IoU = sum of foreground intersections / sum of foreground unions of that class;
- mIoU = mean of the per-class IoUs over the meter's classes (a class never seen counts 0, as in HSNet);
- FB-IoU = mean over {background, foreground} of (total intersection / total union) over all episodes.

N-way episodes (`NWayMeter`) score label maps: class n of an episode is scored as a binary
prediction (label n) against its ground truth (label n) into that class's IoU, so mIoU is over
classes as above; FB-IoU takes every class as foreground (label > 0) against background.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

IGNORE_LABEL = 255


def intersection_union(predictions: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-episode background/foreground intersections and unions, ignoring label 255.

    Args:
        predictions: ``(B, H, W)`` bool, foreground where True.
        targets: ``(B, H, W)`` integer in {0, 1, 255}.

    Returns:
        (intersections, unions), each ``(B, 2)`` int64: column 0 background, column 1 foreground.
    """
    if predictions.shape != targets.shape or predictions.ndim != 3:
        raise ValueError(f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} must both be (B, H, W)")
    valid = targets != IGNORE_LABEL
    truth = targets == 1
    predicted = predictions.bool()
    stacked_truth = torch.stack([~truth, truth], dim=1) & valid[:, None]
    stacked_prediction = torch.stack([~predicted, predicted], dim=1) & valid[:, None]
    intersections = (stacked_truth & stacked_prediction).flatten(2).sum(dim=2)
    unions = (stacked_truth | stacked_prediction).flatten(2).sum(dim=2)
    return intersections, unions


class SegmentationMeter:
    """Accumulates intersections and unions per class over the episodes of one fold.

    >>> meter = SegmentationMeter([1, 2, 3, 4, 5])
    >>> meter.update(predictions, targets, class_ids)   # any number of batches
    >>> meter.compute()["miou"]
    """

    def __init__(self, class_ids: Sequence[int]) -> None:
        self.class_ids = [int(c) for c in class_ids]
        if not self.class_ids or len(set(self.class_ids)) != len(self.class_ids):
            raise ValueError(f"class_ids must be a non-empty list of distinct ids, got {list(class_ids)}")
        self._index = {c: i for i, c in enumerate(self.class_ids)}
        self.intersections = torch.zeros(len(self.class_ids), 2, dtype=torch.int64)
        self.unions = torch.zeros(len(self.class_ids), 2, dtype=torch.int64)
        self.episodes = 0

    def update(self, predictions: torch.Tensor, targets: torch.Tensor, class_ids: torch.Tensor) -> None:
        """Add a batch of episodes.

        Args:
            predictions: ``(B, H, W)`` bool.
            targets: ``(B, H, W)`` uint8/long in {0, 1, 255 = ignore}.
            class_ids: ``(B,)`` the class of each episode; must be one of the meter's classes.
        """
        if class_ids.shape != predictions.shape[:1]:
            raise ValueError(f"class_ids {tuple(class_ids.shape)} must hold one id per episode of predictions {tuple(predictions.shape)}")
        unknown = sorted({int(c) for c in class_ids.tolist()} - set(self._index))
        if unknown:
            raise ValueError(f"class ids {unknown} are not among the meter's classes {self.class_ids}")
        intersections, unions = intersection_union(predictions, targets)
        rows = torch.tensor([self._index[int(c)] for c in class_ids.tolist()], dtype=torch.int64)
        self.intersections.index_add_(0, rows, intersections.cpu())
        self.unions.index_add_(0, rows, unions.cpu())
        self.episodes += len(rows)

    def compute(self) -> dict[str, Any]:
        """``{"miou": float, "fbiou": float, "per_class_iou": {class id: float}, "unscored": [class id]}``,
        scores in 0..100. ``unscored``: the classes no episode was scored for; they count as IoU 0 in mIoU."""
        per_class = self.intersections[:, 1].double() / self.unions[:, 1].clamp(min=1).double() * 100
        totals = self.intersections.sum(dim=0).double() / self.unions.sum(dim=0).clamp(min=1).double()
        return {
            "miou": float(per_class.mean()),
            "fbiou": float(totals.mean() * 100),
            "per_class_iou": {c: float(v) for c, v in zip(self.class_ids, per_class)},
            "unscored": [c for c, unions in zip(self.class_ids, self.unions.sum(dim=1).tolist()) if unions == 0],
        }

    def merged(self, total: Callable[[torch.Tensor], torch.Tensor]) -> SegmentationMeter:
        """A meter holding ``total(counts)`` of this meter's int64 counts, e.g. summed over processes
        (`diffews.distributed.Processes.sum`): intersections, unions and episodes in one tensor."""
        counts = total(torch.cat([self.intersections.flatten(), self.unions.flatten(), torch.tensor([self.episodes])]))
        classes = len(self.class_ids)
        merged = SegmentationMeter(self.class_ids)
        merged.intersections = counts[: 2 * classes].reshape(classes, 2)
        merged.unions = counts[2 * classes : 4 * classes].reshape(classes, 2)
        merged.episodes = int(counts[-1])
        return merged

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready exact state, for resuming an interrupted evaluation."""
        return {
            "class_ids": self.class_ids,
            "intersections": self.intersections.tolist(),
            "unions": self.unions.tolist(),
            "episodes": self.episodes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict` of a meter over the same classes."""
        if [int(c) for c in state["class_ids"]] != self.class_ids:
            raise ValueError("saved meter state is for other classes")
        self.intersections = torch.tensor(state["intersections"], dtype=torch.int64)
        self.unions = torch.tensor(state["unions"], dtype=torch.int64)
        self.episodes = int(state["episodes"])


class NWayMeter:
    """`SegmentationMeter` for N-way episodes: label maps in, mIoU over classes and FB-IoU out.

    >>> meter = NWayMeter([1, 2, 3, 4, 5])
    >>> meter.update(predicted_labels, target_labels, episode_class_ids)
    """

    def __init__(self, class_ids: Sequence[int]) -> None:
        self.classes = SegmentationMeter(class_ids)
        self.foreground = SegmentationMeter([1])
        self.class_ids = self.classes.class_ids
        self.episodes = 0

    def update(self, predictions: torch.Tensor, targets: torch.Tensor, class_ids: torch.Tensor) -> None:
        """Add a batch of episodes.

        Args:
            predictions: ``(B, H, W)`` integer labels, 0 = background, n = the episode's n-th class.
            targets: ``(B, H, W)`` integer labels likewise, 255 = ignore.
            class_ids: ``(B, N)`` the classes of each episode, in label order.
        """
        if class_ids.ndim != 2 or class_ids.shape[0] != predictions.shape[0]:
            raise ValueError(f"class_ids {tuple(class_ids.shape)} must be (B, N) for predictions {tuple(predictions.shape)}")
        ignore = targets == IGNORE_LABEL

        def truth(selected: torch.Tensor) -> torch.Tensor:
            return torch.where(ignore, IGNORE_LABEL, selected.to(torch.uint8))

        for slot in range(class_ids.shape[1]):
            label = slot + 1
            self.classes.update(predictions == label, truth(targets == label), class_ids[:, slot])
        self.foreground.update(predictions > 0, truth(targets > 0), torch.ones(len(class_ids), dtype=torch.int64))
        self.episodes += len(class_ids)

    def compute(self) -> dict[str, Any]:
        """As `SegmentationMeter.compute`: mIoU and per-class IoU over classes, FB-IoU of any class vs background."""
        scores = self.classes.compute()
        return {**scores, "fbiou": self.foreground.compute()["fbiou"]}

    def merged(self, total: Callable[[torch.Tensor], torch.Tensor]) -> NWayMeter:
        """As `SegmentationMeter.merged`: the counts of both meters and the episodes, totalled."""
        merged = NWayMeter(self.class_ids)
        merged.classes = self.classes.merged(total)
        merged.foreground = self.foreground.merged(total)
        merged.episodes = int(total(torch.tensor([self.episodes]))[0])
        return merged

    def state_dict(self) -> dict[str, Any]:
        return {"classes": self.classes.state_dict(), "foreground": self.foreground.state_dict(), "episodes": self.episodes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.classes.load_state_dict(state["classes"])
        self.foreground.load_state_dict(state["foreground"])
        self.episodes = int(state["episodes"])
