"""SegmentationMeter and intersection_union against a pixel-by-pixel reference and hand-computed numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffews.evaluation.metrics import SegmentationMeter, intersection_union

IGNORE = 255


def random_episodes(seed, classes, count=30, shape=(7, 9)):
    """`count` episodes (prediction, target, class id): bool predictions, targets in {0, 1, 255}."""
    rng = np.random.default_rng(seed)
    episodes = []
    for index in range(count):
        prediction = rng.random(shape) < rng.uniform(0.1, 0.9)
        target = rng.choice(np.array([0, 1, IGNORE], dtype=np.uint8), size=shape, p=[0.5, 0.35, 0.15])
        if index == 0:
            target[:] = IGNORE  # an episode with nothing to score
        if index == 1:
            target[target == 1] = 0  # no foreground in the truth
        episodes.append((prediction, target, int(rng.choice(classes))))
    return episodes


def brute_force_counts(prediction, target):
    """``[[background inter, foreground inter], [background union, foreground union]]`` by looping over pixels."""
    inter = [0, 0]
    union = [0, 0]
    height, width = target.shape
    for y in range(height):
        for x in range(width):
            truth = int(target[y, x])
            if truth == IGNORE:
                continue
            predicted = 1 if prediction[y, x] else 0
            for label in (0, 1):
                in_truth = truth == label
                in_prediction = predicted == label
                inter[label] += int(in_truth and in_prediction)
                union[label] += int(in_truth or in_prediction)
    return inter, union


def brute_force_scores(episodes, meter_classes):
    """HSNet's per-class IoU, mIoU and FB-IoU (0..100) computed with plain Python."""
    foreground_inter = {c: 0 for c in meter_classes}
    foreground_union = {c: 0 for c in meter_classes}
    total_inter = [0, 0]
    total_union = [0, 0]
    for prediction, target, class_id in episodes:
        inter, union = brute_force_counts(prediction, target)
        foreground_inter[class_id] += inter[1]
        foreground_union[class_id] += union[1]
        for label in (0, 1):
            total_inter[label] += inter[label]
            total_union[label] += union[label]
    per_class = {c: 100.0 * foreground_inter[c] / max(foreground_union[c], 1) for c in meter_classes}
    miou = sum(per_class.values()) / len(meter_classes)
    fbiou = 100.0 * (total_inter[0] / total_union[0] + total_inter[1] / total_union[1]) / 2
    return {"miou": miou, "fbiou": fbiou, "per_class_iou": per_class}


def as_batch(episodes, target_dtype=torch.uint8):
    predictions = torch.from_numpy(np.stack([p for p, _, _ in episodes]))
    targets = torch.from_numpy(np.stack([t for _, t, _ in episodes])).to(target_dtype)
    class_ids = torch.tensor([c for _, _, c in episodes])
    return predictions, targets, class_ids


def feed(meter, episodes, batch_sizes, target_dtype=torch.uint8):
    start = 0
    for size in batch_sizes:
        if episodes[start : start + size]:
            meter.update(*as_batch(episodes[start : start + size], target_dtype))
        start += size
    assert start >= len(episodes)


def assert_scores_close(actual, expected):
    assert actual["miou"] == pytest.approx(expected["miou"], abs=1e-9)
    assert actual["fbiou"] == pytest.approx(expected["fbiou"], abs=1e-9)
    assert actual["per_class_iou"].keys() == expected["per_class_iou"].keys()
    for class_id, iou in expected["per_class_iou"].items():
        assert actual["per_class_iou"][class_id] == pytest.approx(iou, abs=1e-9), class_id


METER_CLASSES = [3, 7, 11, 12, 20]
SEEN_CLASSES = [3, 7, 12]  # 11 and 20 never get an episode


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_intersection_union_matches_pixel_loop(seed):
    episodes = random_episodes(seed, SEEN_CLASSES, count=12)
    intersections, unions = intersection_union(*as_batch(episodes)[:2])
    assert intersections.shape == unions.shape == (12, 2)
    for row, (prediction, target, _) in enumerate(episodes):
        inter, union = brute_force_counts(prediction, target)
        assert intersections[row].tolist() == inter
        assert unions[row].tolist() == union


@pytest.mark.parametrize(
    ("seed", "batch_sizes", "target_dtype"),
    [
        (0, [40], torch.uint8),
        (0, [1] * 40, torch.uint8),
        (0, [7, 3, 13, 1, 16], torch.int64),
        (1, [5] * 8, torch.int64),
        (2, [2, 30, 8], torch.uint8),
    ],
)
def test_meter_matches_brute_force_for_any_batching(seed, batch_sizes, target_dtype):
    episodes = random_episodes(seed, SEEN_CLASSES, count=40)
    meter = SegmentationMeter(METER_CLASSES)
    feed(meter, episodes, batch_sizes, target_dtype)
    expected = brute_force_scores(episodes, METER_CLASSES)
    assert expected["per_class_iou"][3] > 0 and expected["per_class_iou"][11] == 0
    assert_scores_close(meter.compute(), expected)
    assert meter.episodes == 40


def test_meter_ignores_episode_order():
    episodes = random_episodes(5, SEEN_CLASSES, count=30)
    shuffled = [episodes[i] for i in np.random.default_rng(6).permutation(len(episodes))]
    meter = SegmentationMeter(METER_CLASSES)
    feed(meter, shuffled, [4, 11, 15])
    assert_scores_close(meter.compute(), brute_force_scores(episodes, METER_CLASSES))


def test_hand_computed_example():
    predictions = torch.tensor(
        [
            [[1, 1, 0], [0, 1, 0]],
            [[0, 1, 1], [1, 0, 1]],
        ],
        dtype=torch.bool,
    )
    targets = torch.tensor(
        [
            [[1, 0, 0], [1, 255, 0]],
            [[0, 1, 1], [0, 0, 255]],
        ],
        dtype=torch.uint8,
    )
    intersections, unions = intersection_union(predictions, targets)
    assert intersections.tolist() == [[2, 1], [2, 2]]
    assert unions.tolist() == [[4, 3], [3, 3]]

    meter = SegmentationMeter([1, 2, 3])
    meter.update(predictions, targets, torch.tensor([1, 2]))
    scores = meter.compute()
    # class 1: 1/3, class 2: 2/3, class 3 never seen: 0
    assert scores["per_class_iou"] == pytest.approx({1: 100 / 3, 2: 200 / 3, 3: 0.0}, abs=1e-12)
    assert scores["miou"] == pytest.approx(100 / 3, abs=1e-12)
    # background 4/7, foreground 3/6
    assert scores["fbiou"] == pytest.approx(100 * (4 / 7 + 1 / 2) / 2, abs=1e-12)
    assert scores["fbiou"] == pytest.approx(53.57142857142857, abs=1e-12)


def test_fresh_meter_scores_zero():
    scores = SegmentationMeter([1, 2]).compute()
    assert scores == {"miou": 0.0, "fbiou": 0.0, "per_class_iou": {1: 0.0, 2: 0.0}, "unscored": [1, 2]}


def test_state_dict_round_trip_continues_accumulation_exactly():
    episodes = random_episodes(3, SEEN_CLASSES, count=24)
    whole = SegmentationMeter(METER_CLASSES)
    feed(whole, episodes, [24])

    first = SegmentationMeter(METER_CLASSES)
    feed(first, episodes[:10], [4, 6])
    saved = json.loads(json.dumps(first.state_dict()))
    resumed = SegmentationMeter(METER_CLASSES)
    resumed.load_state_dict(saved)
    assert resumed.state_dict() == first.state_dict()
    feed(resumed, episodes[10:], [9, 5])

    assert resumed.state_dict() == whole.state_dict()
    assert resumed.episodes == 24
    assert resumed.compute() == whole.compute()


def test_load_state_dict_refuses_other_classes():
    state = SegmentationMeter([1, 2, 4]).state_dict()
    meter = SegmentationMeter([1, 2, 3])
    with pytest.raises(ValueError):
        meter.load_state_dict(state)
    assert meter.state_dict() == SegmentationMeter([1, 2, 3]).state_dict()


def test_update_rejects_unknown_class_and_leaves_meter_unchanged():
    meter = SegmentationMeter([1, 2])
    predictions, targets, _ = as_batch(random_episodes(0, [1], count=2))
    with pytest.raises(ValueError, match="99"):
        meter.update(predictions, targets, torch.tensor([1, 99]))
    assert meter.state_dict() == SegmentationMeter([1, 2]).state_dict()


@pytest.mark.parametrize(
    ("prediction_shape", "target_shape"),
    [((2, 3, 4), (2, 3, 5)), ((2, 3, 4), (1, 3, 4)), ((3, 4), (3, 4)), ((1, 1, 3, 4), (1, 1, 3, 4))],
)
def test_mismatched_or_wrong_rank_shapes_raise(prediction_shape, target_shape):
    predictions = torch.zeros(prediction_shape, dtype=torch.bool)
    targets = torch.zeros(target_shape, dtype=torch.uint8)
    with pytest.raises(ValueError):
        intersection_union(predictions, targets)
    meter = SegmentationMeter([1])
    with pytest.raises(ValueError):
        meter.update(predictions, targets, torch.ones(prediction_shape[0], dtype=torch.int64))
    assert meter.episodes == 0


def test_class_ids_length_must_match_batch():
    meter = SegmentationMeter([1, 2])
    with pytest.raises(ValueError, match=r"class_ids \(3,\) must hold one id per episode"):
        meter.update(torch.zeros(2, 3, 3, dtype=torch.bool), torch.zeros(2, 3, 3, dtype=torch.uint8), torch.tensor([1, 2, 1]))


@pytest.mark.parametrize("class_ids", [[], [1, 2, 1]])
def test_meter_needs_distinct_class_ids(class_ids):
    with pytest.raises(ValueError):
        SegmentationMeter(class_ids)
