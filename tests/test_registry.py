"""Model names resolve in one place: registered names, downloaded releases, local folders, hub ids."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from diffews import DiffewSPipeline, InputError, load_model
from diffews._testing import build_tiny_model
from diffews.app.callbacks import model_notice
from diffews.cli.main import main
from diffews.registry import MODELS, NamedModel, folder_model, named_model, register

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def same_weights(a, b) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def test_tiny_random_is_the_test_builder_and_says_its_masks_mean_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="diffews"):
        model = load_model("tiny-random", torch_dtype=torch.float64)
    assert model.dtype == torch.float64
    assert same_weights(model.to(torch.float32), build_tiny_model())
    assert caplog.messages == [f"tiny-random: {MODELS['tiny-random'].warning}"]
    assert "meaningless" in model_notice("tiny-random") and model_notice("some/folder") is None


def test_a_registered_name_loads_everywhere(tmp_path, monkeypatch):
    """One entry makes a name work for the library, the pipeline and every command."""
    build_tiny_model(seed=4).save_pretrained(tmp_path / "shipped")
    monkeypatch.setitem(MODELS, "shipped-model", None)  # so that the entry is removed after the test
    register(folder_model("shipped-model", "a model shipped for this test", lambda: tmp_path / "shipped"))
    reference = build_tiny_model(seed=4)
    assert same_weights(load_model("shipped-model"), reference)
    assert same_weights(DiffewSPipeline.from_pretrained("shipped-model").model, reference)
    out = tmp_path / "out"
    assert main(["segment", "--model", "shipped-model", "--support", str(EXAMPLES / "support/gnome_dev_cdrom_audio_support_1.jpg"),
                 str(EXAMPLES / "support/gnome_dev_cdrom_audio_support_1_mask.png"), "--query", str(EXAMPLES / "query/gnome_dev_cdrom_audio_query_1.jpg"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["gnome_dev_cdrom_audio_query_1_mask.png", "gnome_dev_cdrom_audio_query_1_overlay.png"]


def test_released_names_load_what_diffews_download_converted(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFEWS_HOME", str(tmp_path))
    with pytest.raises(InputError, match=r"^coco-fold2: not downloaded yet; run 'diffews download coco-fold2'"):
        load_model("coco-fold2")
    build_tiny_model(seed=6).save_pretrained(tmp_path / "models" / "coco-fold2")
    assert same_weights(load_model("coco-fold2"), build_tiny_model(seed=6))


def test_an_existing_local_folder_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_tiny_model(seed=8).save_pretrained(tmp_path / "tiny-random")
    assert named_model("tiny-random") is None
    assert same_weights(load_model("tiny-random"), build_tiny_model(seed=8))


def test_other_names_are_hub_ids():
    assert named_model("someone/diffews-model") is None
    with pytest.raises(InputError, match=r"^someone/diffews-model: no such local folder, and the hub cannot be reached"):
        load_model("someone/diffews-model")


def test_a_named_model_that_cannot_load_says_why(monkeypatch):
    def missing():
        raise InputError("broken: gone; reinstall")

    monkeypatch.setitem(MODELS, "broken", NamedModel("broken", "fails", missing))
    with pytest.raises(InputError, match="^broken: gone; reinstall$"):
        load_model("broken")
