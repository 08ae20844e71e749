"""`flip_queries`: each query's mask image averaged with that of its mirror image, wherever masks are made."""

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

SIZE = 64
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def pipe() -> DiffewSPipeline:
    pipe = DiffewSPipeline(build_tiny_model(seed=3))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def episode(pipe):
    generator = torch.Generator().manual_seed(5)
    queries = torch.rand(3, 3, SIZE, SIZE, generator=generator) * 2 - 1
    supports = torch.rand(1, 2, 3, SIZE, SIZE, generator=generator) * 2 - 1
    masks = (torch.rand(1, 2, 1, SIZE, SIZE, generator=generator) > 0.5).float()
    return queries, pipe.encode_support_tensors(supports, masks)


def flipped(pipe: DiffewSPipeline, on: bool) -> DiffewSPipeline:
    pipe.model.config = replace(pipe.model.config, flip_queries=on)
    return pipe


def test_mask_images_are_the_mean_of_the_query_and_its_mirror(pipe, episode):
    queries, support = episode
    plain = flipped(pipe, False)
    latents = plain.encode_queries(queries)
    direct = plain.predict_latents(latents, support)
    mirrored = plain.predict_latents(latents.flip(-1), support).mask_images
    both = flipped(pipe, True).predict_latents(latents, support)
    flipped(pipe, False)
    assert torch.allclose(both.mask_images, (direct.mask_images + mirrored.flip(-1)) / 2, atol=1e-6)
    assert torch.equal(both.mask_latents, direct.mask_latents)
    assert not torch.allclose(both.mask_images, direct.mask_images, atol=1e-3)  # the tiny model is not symmetric


def test_with_flipped_queries_a_mirrored_query_gets_the_mirrored_mask(pipe, episode):
    """A property the average has and a single pass lacks: mirroring commutes with segmenting."""
    queries, support = episode
    on = flipped(pipe, True)
    latents = on.encode_queries(queries)
    once, mirrored = on.predict_latents(latents, support).mask_images, on.predict_latents(latents.flip(-1), support).mask_images
    off = flipped(pipe, False)
    single, single_mirrored = off.predict_latents(latents, support).mask_images, off.predict_latents(latents.flip(-1), support).mask_images
    assert torch.allclose(mirrored, once.flip(-1), atol=1e-6)
    assert not torch.allclose(single_mirrored, single.flip(-1), atol=1e-3)


def test_every_path_uses_it_and_the_setting_is_saved(pipe, episode, tmp_path):
    """predict, predict_classes and __call__ all go through it; the folder keeps the setting, and a
    folder written before it existed loads with it off."""
    queries, support = episode
    flipped(pipe, True)
    expected = pipe.predict(queries, support).mask_images
    assert torch.allclose(pipe.predict_classes(queries, [support, support])[:, 1], expected, atol=1e-4)  # other batch shapes: float noise
    pipe.save_pretrained(tmp_path / "model")
    flipped(pipe, False)
    assert json.loads((tmp_path / "model" / "diffews_config.json").read_text())["flip_queries"] is True
    loaded = DiffewSPipeline.from_pretrained(tmp_path / "model")
    assert loaded.model.config.flip_queries and torch.allclose(loaded.predict(queries, support).mask_images, expected, atol=1e-6)
    config = json.loads((tmp_path / "model" / "diffews_config.json").read_text())
    del config["flip_queries"]
    (tmp_path / "model" / "diffews_config.json").write_text(json.dumps(config))
    assert not DiffewSModel.from_pretrained(tmp_path / "model").config.flip_queries
    with pytest.raises(ValueError, match="flip_queries must be true or false, got 'yes'"):
        DiffewSConfig(flip_queries="yes")


def test_the_command_line_overrides_the_model(tmp_path, caplog):
    support = ["--support", str(EXAMPLES / "support/gnome_dev_cdrom_audio_support_1.jpg"), str(EXAMPLES / "support/gnome_dev_cdrom_audio_support_1_mask.png")]
    query = ["--query", str(EXAMPLES / "query/gnome_dev_cdrom_audio_query_1.jpg")]
    masks = {}
    for flag in ("--flip-queries", "--no-flip-queries"):
        with caplog.at_level("INFO", logger="diffews"):
            assert main(["segment", "--model", "tiny-random", "--device", "cpu", "--resolution", "64", *support, *query,
                         flag, "--out", str(tmp_path / flag), "--verbose"]) == 0
        masks[flag] = np.asarray(Image.open(tmp_path / flag / "gnome_dev_cdrom_audio_query_1_mask.png"))
    assert not np.array_equal(masks["--flip-queries"], masks["--no-flip-queries"])
    described = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model tiny-random:")]
    assert ["flipped queries on" in line for line in described] == [True, False]
