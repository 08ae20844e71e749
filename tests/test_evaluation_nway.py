"""N-way K-shot episodes and their scores: deterministic draws, supports without the query, label
targets, the meter, and `diffews evaluate --ways`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import diffews.evaluation.evaluate as evaluate_module
from diffews.cli.main import main
from diffews.data import NWayEpisodeDataset, build_episode_dataset, collate_episodes
from diffews.evaluation import ModelPredictor
from diffews.evaluation.metrics import NWayMeter
from diffews.evaluation.predictors import class_mask_images


def nway(benchmarks, ways=2, shots=1, seed=0, episodes=12, benchmark="pascal"):
    root, _ = benchmarks
    if benchmark == "custom":
        return build_episode_dataset("custom", root / "custom", "val", None, shots, 32, episodes, seed, ways=ways)
    return build_episode_dataset("pascal", root, "val", 0, shots, 32, episodes, seed, ways=ways)


@pytest.mark.parametrize(("benchmark", "ways", "shots"), [("pascal", 3, 1), ("custom", 2, 2)])
def test_episodes_are_deterministic_and_supports_never_hold_the_query(benchmarks, benchmark, ways, shots):
    first, again, other_seed = (nway(benchmarks, ways, shots, seed, benchmark=benchmark) for seed in (0, 0, 1))
    assert isinstance(first, NWayEpisodeDataset)
    draws = [first.nway_episode(i) for i in range(len(first))]
    assert draws == [again.nway_episode(i) for i in range(len(again))]
    assert draws != [other_seed.nway_episode(i) for i in range(len(other_seed))]
    split = first.split
    for index, (query, classes, supports) in enumerate(draws):
        assert len(set(classes)) == ways and set(classes) <= set(split.class_ids)
        assert first.episode(index)[1] in classes  # the query shows at least its drawn class
        for class_id, keys in zip(classes, supports):
            assert len(set(keys)) == shots and query not in keys
            assert all((key, class_id) in split.pairs for key in keys)
    assert len({tuple(classes) for _, classes, _ in draws}) > 1  # class order and choice vary


def test_items_hold_labels_over_the_episode_classes(benchmarks):
    dataset = nway(benchmarks, 2, 1, episodes=6)
    for index in range(len(dataset)):
        item = dataset[index]
        query, classes, _ = dataset.nway_episode(index)
        assert item["support_images"].shape == (2, 1, 3, 32, 32) and item["support_masks"].shape == (2, 1, 1, 32, 32)
        assert item["class_ids"].tolist() == classes
        _, labels = dataset.query_labels(query, classes)
        for label, class_id in enumerate(classes, 1):  # against each class's own 1-way target
            if (query, class_id) in dataset.split.pairs:
                target = dataset.split.target(query, class_id)
                assert np.array_equal(labels == label, (target == 1) & ~np.isin(labels, [l for l in range(1, label)]))
            else:
                assert not (labels == label).any()
    assert collate_episodes([dataset[0], dataset[1]])["support_images"].shape == (2, 2, 1, 3, 32, 32)


def test_too_many_ways_is_an_input_error(benchmarks, capsys, tmp_path):
    root, _ = benchmarks
    assert main(["evaluate", "--model", "tiny-random", "--workers", "0", "--root", str(root), "--benchmark", "pascal",
                 "--fold", "0", "--ways", "6", "--out", str(tmp_path / "r.json")]) == 2
    assert "6-way episodes need 6 classes, the split has 5" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_cached_latents_with_ways_is_an_input_error(benchmarks, capsys, tmp_path):
    root, _ = benchmarks
    assert main(["evaluate", "--model", "tiny-random", "--root", str(root), "--benchmark", "pascal", "--fold", "0",
                 "--ways", "2", "--cache-latents", "--out", str(tmp_path / "r.json")]) == 2
    assert "--cache-latents: cached latents score 1-way episodes; leave it out with --ways" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_meter_scores_classes_and_foreground():
    meter = NWayMeter([1, 2, 3])
    targets = torch.tensor([[[0, 1, 1, 2], [255, 2, 0, 0]]], dtype=torch.uint8)
    predictions = torch.tensor([[[0, 1, 2, 2], [1, 2, 0, 1]]])
    meter.update(predictions, targets, torch.tensor([[3, 1]]))
    scores = meter.compute()
    # label 1 = class 3: truth {(0,1),(0,2)}, predicted {(0,1),(1,3)} -> 1/3; label 2 = class 1: truth
    # {(0,3),(1,1)}, predicted {(0,2),(0,3),(1,1)} -> 2/3; class 2 never seen -> 0
    assert scores["per_class_iou"] == pytest.approx({3: 100 / 3, 1: 200 / 3, 2: 0.0})
    assert scores["miou"] == pytest.approx(100 / 3)
    # foreground: truth 4 pixels, predicted 5 (one ignored): intersection 4, union 5; background: 2 of 3
    assert scores["fbiou"] == pytest.approx((4 / 5 + 2 / 3) / 2 * 100)
    doubled = meter.merged(lambda counts: counts * 2)  # as if two processes had seen the same episode
    assert doubled.compute() == scores and doubled.episodes == 2 and meter.episodes == 1
    restored = NWayMeter([1, 2, 3])
    restored.load_state_dict(json.loads(json.dumps(meter.state_dict())))
    assert restored.compute() == scores and restored.episodes == 1


def test_model_predictor_batches_classes_like_one_class_at_a_time(benchmarks, tiny_pipeline):
    dataset = nway(benchmarks, 3, 1, episodes=3)
    batch = collate_episodes([dataset[i] for i in range(3)])
    predictor = ModelPredictor(tiny_pipeline)

    class OneClassAtATime:
        mask_images = predictor.mask_images

    batched = class_mask_images(predictor, batch)
    assert batched.shape == (3, 3, 3, 32, 32)
    assert (batched - class_mask_images(OneClassAtATime(), batch)).abs().max() <= 1e-5


def test_evaluate_ways_reports_and_perfect_labels_score_every_seen_class(benchmarks, tmp_path, monkeypatch, capsys):
    root, _ = benchmarks
    args = ["evaluate", "--model", "tiny-random", "--workers", "0", "--batch-size", "2", "--root", str(root),
            "--benchmark", "pascal", "--fold", "0", "--episodes", "5", "--ways", "2", "--resolution", "32"]
    assert main([*args, "--out", str(tmp_path / "model.json")]) == 0
    report = json.loads((tmp_path / "model.json").read_text())
    assert report["settings"]["ways"] == 2 and report["results"]["0"]["episodes"] == 5
    assert "pascal val, 2-way 1-shot" in capsys.readouterr().out

    def perfect(predictor, batch, threshold, mode):
        return [torch.where(target == 255, 0, target) for target in batch["query_target"]]

    monkeypatch.setattr(evaluate_module, "predict_labels", perfect)
    assert main([*args, "--out", str(tmp_path / "perfect.json")]) == 0
    result = json.loads((tmp_path / "perfect.json").read_text())["results"]["0"]
    dataset = build_episode_dataset("pascal", root, "val", 0, 1, 32, 5, 0, target_size=512, ways=2)
    seen = {int(dataset[i]["class_ids"][label - 1]) for i in range(5) for label in dataset[i]["query_target"].unique().tolist() if label not in (0, 255)}
    names = dataset.split.class_names
    assert result["per_class_iou"] == {names[c]: (100.0 if c in seen else 0.0) for c in dataset.split.class_ids}
    assert result["fbiou"] == 100.0
