"""The authors' evaluation reproduced: a checkpoint in their layout, converted with default options,
against the independent reference in `authors_reference` (tokenisation to thresholding)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from authors_fixtures import write_authors_checkpoint
from authors_reference import AuthorsReference
from PIL import Image

from diffews import DiffewSPipeline
from diffews.cli.main import main
from diffews.data import collate_episodes
from diffews.evaluation.evaluate import EvaluationSettings, predict
from diffews.evaluation.predictors import ModelPredictor

R = 64
EIGHT_BIT_STEP = 1 / 255
MIXED = 0.5
"""A threshold that splits the random model's near-grey mask images into foreground and background
(at the authors' 0.25 nearly every pixel is foreground)."""


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(the pipeline of the checkpoint's default conversion, the reference, the converted folder)."""
    root = tmp_path_factory.mktemp("authors-eval")
    checkpoint = write_authors_checkpoint(root)
    assert main(["convert", "--unet", str(checkpoint["unet"]), "--base", str(checkpoint["base"]), "--out", str(root / "m"), "--resolution", str(R)]) == 0
    pipe = DiffewSPipeline.from_pretrained(root / "m")
    pipe.set_progress_bar_config(disable=True)
    return pipe, AuthorsReference(checkpoint["base"], checkpoint["config"], checkpoint["state"]), root / "m"


def mask_agreement(masks: list[np.ndarray], reference: list[tuple], mixed: bool) -> float:
    """Fraction of pixels where our masks equal the reference's; asserts it is >= 99.99 % (and, if
    `mixed`, that the reference's masks are neither empty nor full, so that agreeing means something)."""
    ours = np.concatenate([np.asarray(m).ravel() for m in masks])
    theirs = np.concatenate([m.ravel() for m, _, _ in reference])
    if mixed:
        assert 0.1 < theirs.mean() < 0.9, f"the reference's masks cover {theirs.mean():.1%}"
    agreement = float((ours == theirs).mean())
    assert agreement >= 0.9999, f"masks agree on {agreement:.4%} of pixels"
    return agreement


def random_inputs(seed: int, shots: int, size: tuple[int, int]):
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(shots + 2)]
    masks = [rng.random(size) < 0.4 for _ in range(shots)]
    return images[:shots], masks, images[shots:]


@pytest.mark.parametrize("shots", [1, 3])
def test_the_pipeline_with_the_authors_rule_reproduces_their_evaluation(converted, shots):
    """Inputs at the working size, so that both sides' resizing is the identity (resizing: next test)."""
    pipe, reference, _ = converted
    supports, masks, queries = random_inputs(shots, shots, (R, R))
    for threshold in (0.25, MIXED):
        out = pipe(queries, supports, masks, threshold=threshold, threshold_mode="authors")
        theirs = reference.segment(supports, masks, queries, R, threshold=threshold)
        agreement = mask_agreement(out.masks, theirs, mixed=threshold == MIXED)
        for probability, cut, (_, their_probability, their_cut) in zip(out.probabilities, out.thresholds, theirs):
            assert np.abs(probability - their_probability).max() <= EIGHT_BIT_STEP + 1e-6
            assert abs(cut - their_cut) <= threshold * EIGHT_BIT_STEP + 1e-6
        print(f"\n{shots}-shot pipeline, threshold {threshold}: masks agree on {agreement:.4%} of pixels")


def write_folder(root, sizes: dict[str, list[tuple[int, int]]]) -> None:
    """A custom benchmark folder: ``<class>/<name>.png`` with ``<name>_mask.png`` (0/255), images of the given sizes."""
    rng = np.random.default_rng(7)
    for name, image_sizes in sizes.items():
        (root / name).mkdir(parents=True)
        for number, (height, width) in enumerate(image_sizes):
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / name / f"p{number}.png")
            mask = np.zeros((height, width), np.uint8)
            mask[height // 4 : 3 * height // 4, width // 5 : 4 * width // 5] = 255
            Image.fromarray(mask).save(root / name / f"p{number}_mask.png")


@pytest.mark.parametrize(("shots", "score_size"), [(1, R), (3, "original")])
def test_the_evaluation_with_the_authors_protocol_reproduces_their_evaluation(converted, tmp_path, shots, score_size):
    """From files of other sizes than the working one: PIL resizing in; at the original size, nearest
    resizing out before the 8-bit truncation."""
    pipe, reference, _ = converted
    write_folder(tmp_path / "data", {"cat": [(50, 70), (93, 41), (64, 64), (37, 80)], "dog": [(81, 66), (45, 45), (70, 52), (33, 99)]})
    settings = EvaluationSettings(
        "custom", str(tmp_path / "data"), "val", shots, None, 0, R, score_size, MIXED, "authors", preprocessing="authors"
    )
    dataset = settings.dataset(None)
    ours = predict(ModelPredictor(pipe), collate_episodes([dataset[i] for i in range(len(dataset))]), MIXED, "authors")
    theirs = []
    for index in range(len(dataset)):
        query, _, supports = dataset.episode(index)
        path = dataset.split.image_path
        images = [Image.open(path(key)) for key in supports]
        masks = [np.asarray(Image.open(path(key).with_name(f"{path(key).stem}_mask.png"))) > 127 for key in supports]
        query_image = Image.open(path(query))
        size = (query_image.height, query_image.width) if score_size == "original" else (R, R)
        theirs += reference.segment(images, masks, [query_image], R, sizes=[size], threshold=MIXED)
    agreement = mask_agreement([m.numpy() for m in ours], theirs, mixed=True)
    print(f"\n{shots}-shot evaluation scored at {score_size}: masks agree on {agreement:.4%} of pixels")


def test_the_command_line_records_shows_and_applies_it(converted, tmp_path, caplog):
    _, reference, folder = converted
    assert json.loads((folder / "diffews_config.json").read_text())["prompt"] == "authors-eval"
    assert "Prompt embedding: authors-eval (2 tokens" in (folder / "README.md").read_text()
    supports, masks, queries = random_inputs(5, 1, (R, R))
    supports[0].save(tmp_path / "s.png")
    Image.fromarray(masks[0]).save(tmp_path / "s_mask.png")
    queries[0].save(tmp_path / "q.png")
    args = ["segment", "--verbose", "--model", str(folder), "--support", str(tmp_path / "s.png"), str(tmp_path / "s_mask.png"),
            "--query", str(tmp_path / "q.png"), "--out", str(tmp_path / "out"), "--threshold-mode", "authors", "--threshold", str(MIXED)]
    with caplog.at_level(logging.INFO, logger="diffews"):
        assert main(args) == 0
    assert "prompt authors-eval (2 tokens: the empty prompt unpadded" in caplog.text
    written = np.asarray(Image.open(tmp_path / "out/q_mask.png")) > 0
    mask_agreement([written], reference.segment(supports, masks, queries[:1], R, threshold=MIXED), mixed=True)
