"""The built-in model diffews-icons-small: packaged, loaded offline by name, the default, and it segments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffews import DiffewSPipeline
from diffews.cli.main import build_parser, main
from diffews.errors import InputError
from diffews.modeling import builtin
from diffews.modeling.builtin import DEFAULT_MODEL
from diffews.processing.images import load_mask
from diffews.registry import load_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MIN_EXAMPLE_IOU = 0.7
"""Each shipped query's mask IoU against its ground truth must exceed this (measured on this checkout: 0.81, 0.77, 0.81 with both supports)."""


@pytest.fixture(scope="module")
def pipe():
    pipe = DiffewSPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_the_default_model_is_the_builtin_one_loaded_offline_in_float32(pipe):
    named = load_model(DEFAULT_MODEL)
    assert pipe.model.config.resolution == named.config.resolution == 256
    assert pipe.dtype == torch.float32
    assert pipe.model.config.thresholding() == (0.005, "relative")  # chosen on val episodes (docs/learning.md); the docs quote it
    assert all(torch.equal(a, b) for a, b in zip(pipe.model.unet.state_dict().values(), named.unet.state_dict().values()))
    stored = builtin.MODELS_ROOT / DEFAULT_MODEL
    assert sum(p.stat().st_size for p in stored.rglob("*") if p.is_file()) <= 25 * 2**20


def test_the_builtin_unet_has_the_architecture_of_its_recipe():
    recipe = json.loads((Path(__file__).resolve().parents[1] / "configs" / "icons" / "unet-w44.json").read_text())
    packaged = json.loads((builtin.MODELS_ROOT / DEFAULT_MODEL / "unet" / "config.json").read_text())
    assert {key: packaged[key] for key in recipe} == recipe


@pytest.mark.parametrize("command", [["segment", "--support", "a", "b", "--query", "q", "--out", "o"], ["app"], ["evaluate", "--benchmark", "custom", "--root", "r"]])
def test_commands_default_to_the_builtin_model(command):
    args = build_parser().parse_args(command)
    assert (args.model or DEFAULT_MODEL) == DEFAULT_MODEL


def _example_pairs() -> tuple[list[Path], list[Path], list[Path]]:
    supports = sorted(p for p in (EXAMPLES / "support").glob("*.jpg"))
    queries = sorted((EXAMPLES / "query").glob("*.jpg"))
    return supports, [p.with_name(f"{p.stem}_mask.png") for p in supports], queries


def test_builtin_model_segments_the_shipped_held_out_examples(pipe):
    supports, support_masks, queries = _example_pairs()
    assert len(supports) >= 1 and len(queries) >= 1
    out = pipe([str(q) for q in queries], support_images=[str(s) for s in supports], support_masks=[str(m) for m in support_masks])
    for query, predicted in zip(queries, out.masks):
        truth = load_mask(EXAMPLES / "query_ground_truth" / f"{query.stem}_mask.png")
        iou = (predicted & truth).sum() / (predicted | truth).sum()
        assert iou > MIN_EXAMPLE_IOU, f"{query.name}: IoU {iou:.3f}"


def test_cli_segments_the_examples_with_the_default_model(tmp_path):
    supports, support_masks, queries = _example_pairs()
    args = ["segment", "--query", str(EXAMPLES / "query"), "--out", str(tmp_path)]
    for image, mask in zip(supports, support_masks):
        args += ["--support", str(image), str(mask)]
    assert main(args) == 0
    for query in queries:
        predicted = load_mask(tmp_path / f"{query.stem}_mask.png")
        truth = load_mask(EXAMPLES / "query_ground_truth" / f"{query.stem}_mask.png")
        assert (predicted & truth).sum() / (predicted | truth).sum() > MIN_EXAMPLE_IOU


def test_a_damaged_installation_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin, "MODELS_ROOT", tmp_path)
    with pytest.raises(InputError, match=f"^{DEFAULT_MODEL}: the built-in model's files are missing from {tmp_path / DEFAULT_MODEL}; reinstall diffews$"):
        DiffewSPipeline.from_pretrained()


def test_the_shipped_folds_hold_out_exactly_the_model_cards_classes_and_the_examples_class():
    """docs/learning/iconbench-folds pins fold 0 for rebuilding the benchmark (`--folds-from`): it must be the
    card's held-out list, or a rebuild would score the built-in model on classes it trained on."""
    from diffews.data.composite import read_description
    from diffews.data.synthesize import first_word

    card = (builtin.builtin_folder() / "README.md").read_text()
    listed = card.split("Held-out (fold 0) classes, never trained to segment (196):\n", 1)[1].split("\n", 1)[0]
    held_out = [name.strip("`") for name in listed.split(", ")]
    folds = read_description(EXAMPLES.parent / "docs" / "learning" / "iconbench-folds")["folds"]
    assert len(held_out) == 196 and sorted(folds[0]) == sorted(held_out)
    families = [{first_word(name) for name in fold} for fold in folds]
    assert all(not families[i] & families[j] for i in range(4) for j in range(i + 1, 4))  # no near-namesake across folds
    assert "gnome-dev-cdrom-audio" in folds[0]  # the README examples' class (examples/SOURCES.md)
