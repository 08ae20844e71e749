"""`shot_fusion`: K supports combined by attention (the method's) or by averaging K one-shot predictions."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffews import DiffewSConfig, DiffewSModel, DiffewSPipeline
from diffews._testing import build_tiny_model
from diffews.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def episode():
    """Two queries and two support sets of three shots (set b serves query b), 64 px."""
    generator = torch.Generator().manual_seed(6)
    queries = torch.rand(2, 3, 64, 64, generator=generator) * 2 - 1
    supports = torch.rand(2, 3, 3, 64, 64, generator=generator) * 2 - 1
    masks = (torch.rand(2, 3, 1, 64, 64, generator=generator) > 0.5).float()
    return queries, supports, masks


@pytest.fixture(scope="module")
def pipe() -> DiffewSPipeline:
    """A tiny model of its own: the tests change its settings."""
    return DiffewSPipeline(build_tiny_model(seed=4))


def fused_by(pipe: DiffewSPipeline, fusion: str, flip: bool = False) -> DiffewSPipeline:
    pipe.model.config = replace(pipe.model.config, shot_fusion=fusion, flip_queries=flip)
    return pipe


def test_a_context_splits_into_the_contexts_of_its_shots(pipe, episode):
    """Shot k of a joined context is the context of support k encoded alone (up to the float noise of
    another batch size)."""
    _, supports, masks = episode
    joined = pipe.encode_support_tensors(supports, masks)
    for k, shot in enumerate(joined.shots()):
        alone = pipe.encode_support_tensors(supports[:, k : k + 1], masks[:, k : k + 1])
        assert shot.num_shots == 1 and shot.keys.keys() == alone.keys.keys()
        for layer in alone.keys:
            assert torch.allclose(shot.keys[layer], alone.keys[layer], atol=1e-5)
            assert torch.allclose(shot.values[layer], alone.values[layer], atol=1e-5)


@pytest.mark.parametrize("flip", [False, True])
def test_mean_fusion_averages_the_one_shot_predictions(pipe, episode, flip):
    """Against K predictions made separately, one support each (support sets per query, and with mirrored queries too)."""
    queries, supports, masks = episode
    pipe = fused_by(pipe, "attention", flip)
    singles = [pipe.predict(queries, pipe.encode_support_tensors(supports[:, k : k + 1], masks[:, k : k + 1])) for k in range(3)]
    joint = pipe.predict(queries, pipe.encode_support_tensors(supports, masks)).mask_images
    fused = fused_by(pipe, "mean", flip).predict(queries, pipe.encode_support_tensors(supports, masks))
    fused_by(pipe, "attention")
    assert torch.allclose(fused.mask_images, torch.stack([s.mask_images for s in singles]).mean(0), atol=1e-5)
    assert torch.allclose(fused.mask_latents, torch.stack([s.mask_latents for s in singles]).mean(0), atol=1e-5)
    assert not torch.allclose(fused.mask_images, joint, atol=1e-3)  # a different prediction from the joint one


def test_one_support_is_the_same_either_way_and_every_path_uses_it(pipe, episode, tmp_path):
    queries, supports, masks = episode
    one = pipe.encode_support_tensors(supports[:1, :1], masks[:1, :1])
    assert torch.equal(fused_by(pipe, "mean").predict(queries, one).mask_images, fused_by(pipe, "attention").predict(queries, one).mask_images)
    shared = pipe.encode_support_tensors(supports[:1], masks[:1])
    fused_by(pipe, "mean")
    expected = pipe.predict(queries, shared).mask_images
    assert torch.allclose(pipe.predict_classes(queries, [one, shared])[:, 1], expected, atol=1e-4)  # other batch shapes: float noise
    pipe.save_pretrained(tmp_path / "model")
    fused_by(pipe, "attention")
    assert json.loads((tmp_path / "model" / "diffews_config.json").read_text())["shot_fusion"] == "mean"
    loaded = DiffewSPipeline.from_pretrained(tmp_path / "model")
    assert torch.allclose(loaded.predict(queries, shared).mask_images, expected, atol=1e-6)
    config = json.loads((tmp_path / "model" / "diffews_config.json").read_text())
    del config["shot_fusion"]  # a folder written before the setting existed: the method's
    (tmp_path / "model" / "diffews_config.json").write_text(json.dumps(config))
    assert DiffewSModel.from_pretrained(tmp_path / "model").config.shot_fusion == "attention"
    with pytest.raises(ValueError, match="shot_fusion must be one of attention, mean, got 'vote'"):
        DiffewSConfig(shot_fusion="vote")


def test_the_command_line_overrides_the_model(tmp_path, caplog):
    support = []
    for k in (1, 2):
        support += ["--support", str(EXAMPLES / f"support/gnome_dev_cdrom_audio_support_{k}.jpg"),
                    str(EXAMPLES / f"support/gnome_dev_cdrom_audio_support_{k}_mask.png")]
    query = ["--query", str(EXAMPLES / "query/gnome_dev_cdrom_audio_query_1.jpg")]
    masks = {}
    for fusion in ("attention", "mean"):
        with caplog.at_level("INFO", logger="diffews"):
            assert main(["segment", "--model", "tiny-random", "--device", "cpu", "--resolution", "64", *support, *query,
                         "--shot-fusion", fusion, "--out", str(tmp_path / fusion), "--verbose"]) == 0
        masks[fusion] = np.asarray(Image.open(tmp_path / fusion / "gnome_dev_cdrom_audio_query_1_mask.png"))
    assert not np.array_equal(masks["attention"], masks["mean"])
    described = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model tiny-random:")]
    assert ["shots fused by attention" in described[0], "shots fused by mean" in described[1]] == [True, True]
