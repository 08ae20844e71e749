"""Several classes at once: label maps against per-class binary runs, one query encode, errors."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch
from helpers import box_mask, random_image
from PIL import Image

from diffews import DiffewSPipeline, InputError
from diffews.processing.labels import check_class_names, connected_components, label_map


@pytest.fixture
def class_supports(rng):
    """Three classes: two with one shot, one with two shots (so two shot-count groups)."""
    return {
        "cat": ([random_image(rng, 48, 64)], [box_mask(48, 64)]),
        "dog": ([random_image(rng, 40, 40), random_image(rng, 56, 32)], [box_mask(40, 40, 0.0, 0.4), box_mask(56, 32, 0.5, 1.0)]),
        "sky": ([random_image(rng, 32, 32)], [box_mask(32, 32, 0.0, 0.3)]),
    }


@pytest.fixture
def queries(rng):
    return [random_image(rng, 40, 30), random_image(rng, 33, 47), random_image(rng, 40, 30)]


def record_unet_batches(pipe: DiffewSPipeline, monkeypatch) -> list[tuple[int, int]]:
    """(query rows, support sets) of every `predict_latents` call `pipe` makes from now on."""
    calls, predict_latents = [], pipe.predict_latents

    def recording(latents, support):
        calls.append((latents.shape[0], support.num_sets))
        return predict_latents(latents, support)

    monkeypatch.setattr(pipe, "predict_latents", recording)
    return calls


def expected_labels(probabilities: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
    """The label rule written out class by class: a covered pixel goes to the strictly larger probability."""
    labels = np.zeros(masks[0].shape, dtype=np.uint8)
    best = np.full(masks[0].shape, -1.0)
    for index, (probability, mask) in enumerate(zip(probabilities, masks), start=1):
        take = mask & (probability > best)
        labels[take] = index
        best[take] = probability[take]
    return labels


def test_label_maps_follow_per_class_binary_runs(tiny_pipeline, class_supports, queries):
    thresholds = {"cat": 0.3, "dog": 0.35, "sky": 0.6}
    modes = {"cat": "relative", "dog": "absolute", "sky": "relative"}
    contexts = {name: tiny_pipeline.encode_support(*pair) for name, pair in class_supports.items()}
    out = tiny_pipeline.segment_classes(queries, contexts, threshold=thresholds, threshold_mode=modes, batch_size=2)
    binary = {
        name: tiny_pipeline(queries, support=context, threshold=thresholds[name], threshold_mode=modes[name])
        for name, context in contexts.items()
    }
    assert out.class_names == ["cat", "dog", "sky"]
    for q in range(len(queries)):
        probabilities = [binary[name].probabilities[q] for name in out.class_names]
        masks = [binary[name].masks[q] for name in out.class_names]
        cuts = [binary[name].thresholds[q] for name in out.class_names]
        stack = np.stack(probabilities)
        drift = np.abs(out.probabilities[q] - stack).max()
        assert drift <= 1e-5
        assert np.allclose(out.thresholds[q], cuts, atol=1e-5)
        # batching may move a probability by `drift`: compare where no threshold or ranking is that close
        margin = 2 * drift + 1e-7
        near_cut = (np.abs(stack - np.asarray(cuts)[:, None, None]) <= margin).any(axis=0)
        near_tie = (np.diff(np.sort(stack, axis=0), axis=0) <= margin).any(axis=0)
        clear = ~(near_cut | near_tie)
        assert clear.mean() > 0.9
        assert np.array_equal(out.masks[q][:, clear], np.stack(masks)[:, clear])
        assert np.array_equal(out.labels[q][clear], expected_labels(probabilities, masks)[clear])
        # and exactly, from the returned per-class results themselves
        assert np.array_equal(out.labels[q], expected_labels(list(out.probabilities[q]), list(out.masks[q])))
        assert out.labels[q].dtype == np.uint8 and out.labels[q].shape == queries[q].size[::-1]
    assert {int(v) for q in range(3) for v in np.unique(out.labels[q])} <= {0, 1, 2, 3}


def test_query_is_encoded_once_and_classes_run_as_batches(tiny_model, class_supports, queries):
    pipe = DiffewSPipeline(tiny_model)
    pipe.set_progress_bar_config(disable=True)
    contexts = {name: pipe.encode_support(*pair) for name, pair in class_supports.items()}
    encoder_batches, unet_batches = [], []
    hooks = [
        tiny_model.vae.encoder.register_forward_pre_hook(lambda module, args: encoder_batches.append(args[0].shape[0])),
        tiny_model.unet.register_forward_pre_hook(lambda module, args: unet_batches.append(args[0].shape[0])),
    ]
    try:
        pipe.segment_classes(queries, contexts, batch_size=4)
        grouped = list(unet_batches)
        unet_batches.clear()
        pipe.segment_classes(queries, contexts, batch_size=4, class_batch_size=1)
    finally:
        for hook in hooks:
            hook.remove()
    assert encoder_batches == [3, 3]  # one VAE encode of the three queries per call, not one per class
    assert grouped == [2 * 3, 1 * 3]  # cat + sky (one shot) in one UNet call, dog (two shots) in another
    assert unet_batches == [3, 3, 3]


def test_shared_support_sets_reach_the_unet_once_per_class(tiny_pipeline, class_supports, queries, monkeypatch):
    """One set per class serves its block of queries: the fused context holds N sets, not N x B copies."""
    contexts = {name: tiny_pipeline.encode_support(*pair) for name, pair in class_supports.items()}
    calls = record_unet_batches(tiny_pipeline, monkeypatch)
    tiny_pipeline.segment_classes(queries, contexts, batch_size=3)
    assert calls == [(2 * 3, 2), (3, 1)]  # cat + sky: 6 query rows, 2 sets; dog: 3 rows, 1 set


def test_class_batches_and_encoded_supports_do_not_change_results(tiny_pipeline, class_supports, queries):
    contexts = {name: tiny_pipeline.encode_support(*pair) for name, pair in class_supports.items()}
    together = tiny_pipeline.segment_classes(queries, class_supports)
    apart = tiny_pipeline.segment_classes(queries, contexts, class_batch_size=1, batch_size=1)
    for a, b in zip(together.probabilities, apart.probabilities):
        assert np.abs(a - b).max() <= 1e-5


def vanishing_mask() -> np.ndarray:
    """One foreground pixel of 400 x 400 that nearest-neighbour resizing to 64 x 64 never samples."""
    mask = np.zeros((400, 400), dtype=bool)
    mask[1, 1] = True
    return mask


@pytest.mark.parametrize("useless", [np.zeros((40, 40), dtype=bool), vanishing_mask()], ids=["empty", "vanishes-when-resized"])
def test_empty_masks_of_a_class_are_left_out_but_not_all(tiny_pipeline, class_supports, queries, useless):
    images, masks = class_supports["dog"]
    with_useless = tiny_pipeline.segment_classes(queries[:1], {"dog": ([images[0], images[1], images[0]], [masks[0], masks[1], useless])})
    without = tiny_pipeline.segment_classes(queries[:1], {"dog": (images, masks)})
    assert np.abs(with_useless.probabilities[0] - without.probabilities[0]).max() <= 1e-5
    with pytest.raises(InputError, match=r"^class 'dog': every support mask is empty at 64x64 \(a.png, b.png\)$"):
        tiny_pipeline.encode_classes({"dog": (images, [useless, useless])}, sources={"dog": ["a.png", "b.png"]})


def test_left_out_masks_are_named_in_a_warning(tmp_path, tiny_pipeline, class_supports, caplog):
    images, masks = class_supports["dog"]
    Image.fromarray(vanishing_mask()).save(tmp_path / "speck.png")
    tiny_pipeline.encode_classes({"dog": ([images[0], images[1]], [masks[0], tmp_path / "speck.png"])})
    assert f"class 'dog': support masks empty at 64x64 left out: {tmp_path / 'speck.png'}" in caplog.text
    caplog.clear()
    tiny_pipeline.encode_classes({"dog": ([images[0], images[1]], [masks[0], np.zeros((40, 40), dtype=bool)])})
    assert "left out: class 'dog', shot 2" in caplog.text


def test_source_labels_must_match_a_classs_masks(tiny_pipeline, class_supports):
    images, masks = class_supports["dog"]
    with pytest.raises(InputError, match=r"^class 'dog': 2 support masks but 1 source labels$"):
        tiny_pipeline.encode_classes({"dog": (images, masks)}, sources={"dog": ["a.png"]})


@pytest.mark.parametrize("given", [(1, 2, 3), "dog.png", None])
def test_a_class_is_a_context_or_an_images_masks_pair(tiny_pipeline, given):
    with pytest.raises(InputError, match=r"^class 'dog': give a support context or an \(images, masks\) pair, got "):
        tiny_pipeline.encode_classes({"dog": given})


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["cat", "Cat"], "classes: class 'Cat' is given twice (as 'cat' and 'Cat')"),
        (["a/b"], "classes: class name 'a/b' is not a valid file-name part"),
        ([".."], "classes: class name '..' is not a valid file-name part"),
        ([" cat"], "classes: class name ' cat' is not a valid file-name part"),
        ([], "classes: no classes given"),
    ],
)
def test_bad_class_names(names, message):
    with pytest.raises(InputError) as error:
        check_class_names(names, "classes")
    assert str(error.value) == message


def test_a_class_can_use_the_authors_rule(tiny_pipeline, class_supports, queries):
    contexts = {name: tiny_pipeline.encode_support(*pair) for name, pair in class_supports.items()}
    out = tiny_pipeline.segment_classes(queries, contexts, threshold_mode={"sky": "authors"})
    binary = tiny_pipeline(queries, support=contexts["sky"], threshold_mode="authors")
    for q, probability in enumerate(binary.probabilities):
        assert np.abs(out.probabilities[q][2] - probability).max() <= 1 / 255 + 1e-6  # 8-bit values, batching may move one step
        steps = out.probabilities[q][2] * 255 * 3  # the mean of three 8-bit channels
        assert np.abs(steps - np.round(steps)).max() < 1e-3
        assert np.abs(out.probabilities[q][0] * 765 - np.round(out.probabilities[q][0] * 765)).max() > 1e-2  # cat: not 8-bit


def test_thresholds_for_unknown_classes_are_an_error(tiny_pipeline, class_supports, queries):
    with pytest.raises(ValueError, match="threshold given for unknown class"):
        tiny_pipeline.segment_classes(queries[:1], class_supports, threshold={"cow": 0.5})


def test_label_map_rule_and_ties():
    probabilities = np.array([[[0.9, 0.5, 0.2, 0.6]], [[0.8, 0.7, 0.3, 0.6]]], dtype=np.float32)
    masks = np.array([[[True, False, False, True]], [[True, True, False, True]]])
    assert label_map(probabilities, masks).tolist() == [[1, 2, 0, 1]]  # tie at the last pixel: first class


def bfs_components(mask: np.ndarray) -> np.ndarray:
    """Reference: breadth-first search from each unlabelled pixel in raster order."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    count = 0
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        count += 1
        labels[start] = count
        todo = deque([start])
        while todo:
            y, x = todo.popleft()
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = count
                    todo.append((ny, nx))
    return labels


@pytest.mark.parametrize("density", [0.3, 0.55, 0.8])
def test_connected_components_match_a_breadth_first_search(rng, density):
    mask = rng.random((37, 53)) < density
    labels, count = connected_components(mask)
    expected = bfs_components(mask)
    assert count == expected.max()
    assert np.array_equal(labels, expected)


def test_connected_components_of_a_spiral():
    mask = np.zeros((21, 21), dtype=bool)
    top, left, bottom, right = 0, 0, 20, 20
    while top <= bottom and left <= right:  # a one-pixel-wide spiral: a single long component
        mask[top, left : right + 1] = True
        mask[top : bottom + 1, right] = True
        mask[bottom, left : right + 1] = True
        mask[top + 2 : bottom + 1, left] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    labels, count = connected_components(mask)
    assert np.array_equal(labels, bfs_components(mask)) and count == bfs_components(mask).max()


def test_shared_and_per_query_sets_run_apart_without_copies(tiny_pipeline, monkeypatch):
    """A class with one shared set and a class with a set per query (same shot count) run as two
    UNet batches: the shared set reaches the UNet once, not once per query; the masks equal
    `predict`'s for each class alone."""
    generator = torch.Generator().manual_seed(0)
    resolution = tiny_pipeline.resolution
    queries = torch.rand(3, 3, resolution, resolution, generator=generator) * 2 - 1
    images = torch.rand(4, 1, 3, resolution, resolution, generator=generator) * 2 - 1
    masks = (torch.rand(4, 1, 1, resolution, resolution, generator=generator) > 0.5).float()
    shared = tiny_pipeline.encode_support_tensors(images[:1], masks[:1])
    per_query = tiny_pipeline.encode_support_tensors(images[1:], masks[1:])
    alone = [tiny_pipeline.predict(queries, context).mask_images for context in (shared, per_query)]
    calls = record_unet_batches(tiny_pipeline, monkeypatch)
    together = tiny_pipeline.predict_classes(queries, [shared, per_query, shared])
    assert sorted(calls) == [(3, 3), (2 * 3, 2)]  # the shared class twice: 2 sets for 6 rows; per query: 3 sets
    for n, expected in enumerate([alone[0], alone[1], alone[0]]):
        assert torch.allclose(together[:, n], expected, atol=1e-5)
