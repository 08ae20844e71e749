"""DiffewSPipeline: outputs at the original size, the support cache, thresholds, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import box_mask, random_image
from PIL import Image

from diffews import DiffewSPipeline, InputError
from diffews._testing import build_tiny_model
from diffews.modeling.fsa import SupportContext


@pytest.fixture
def support(rng):
    images = [random_image(rng, 48, 64), random_image(rng, 70, 50)]
    masks = [box_mask(48, 64), box_mask(35, 25, 0.1, 0.6)]  # second mask at half its image's size
    return images, masks


@pytest.fixture
def queries(rng):
    return [random_image(rng, 40, 30), rng.integers(0, 256, (90, 60, 3), dtype=np.uint8), torch.rand(3, 33, 77)]


def test_outputs_have_each_querys_original_size(tiny_pipeline, support, queries):
    out = tiny_pipeline(queries, *support, output_latents=True)
    assert [m.shape for m in out.masks] == [(40, 30), (90, 60), (33, 77)]
    assert [p.shape for p in out.probabilities] == [(40, 30), (90, 60), (33, 77)]
    assert all(m.dtype == bool for m in out.masks)
    assert all(p.dtype == np.float32 and 0 <= p.min() and p.max() <= 1 for p in out.probabilities)
    assert out.mask_latents.shape == (3, 4, 8, 8)


def test_cached_support_equals_uncached(tiny_pipeline, support, queries):
    uncached = tiny_pipeline(queries, *support, output_latents=True)
    context = tiny_pipeline.encode_support(*support)
    cached = tiny_pipeline(queries, support=context, output_latents=True)
    assert (uncached.mask_latents - cached.mask_latents).abs().max() <= 1e-5
    for a, b in zip(uncached.probabilities, cached.probabilities):
        assert np.abs(a - b).max() <= 1e-5


def test_batching_does_not_change_results(tiny_pipeline, support, queries):
    context = tiny_pipeline.encode_support(*support)
    together = tiny_pipeline(queries, support=context, batch_size=3, output_latents=True)
    one_by_one = tiny_pipeline(queries, support=context, batch_size=1, output_latents=True)
    assert (together.mask_latents - one_by_one.mask_latents).abs().max() <= 1e-5


def test_support_pass_runs_once_per_support_set(tiny_model, support, queries):
    pipe = DiffewSPipeline(tiny_model)
    pipe.set_progress_bar_config(disable=True)
    inputs = []
    hook = tiny_model.unet.register_forward_pre_hook(lambda module, args: inputs.append(args[0].shape[1]))
    try:
        context = pipe.encode_support(*support)
        for _ in range(3):
            pipe(queries, support=context, batch_size=2)
    finally:
        hook.remove()
    assert inputs.count(8) == 1  # one support pass (2 shots batched together)
    assert inputs.count(4) == 6  # 3 calls x 2 query batches


def test_masks_follow_the_reported_thresholds(tiny_pipeline, support, queries):
    relative = tiny_pipeline(queries, *support)
    for mask, probability, cut in zip(relative.masks, relative.probabilities, relative.thresholds):
        assert cut == pytest.approx(0.25 * probability.max(), rel=1e-6)
        assert np.array_equal(mask, probability > cut)
    absolute = tiny_pipeline(queries, *support, threshold=0.4, threshold_mode="absolute")
    assert absolute.thresholds == pytest.approx([0.4] * 3)
    assert all(np.array_equal(m, p > np.float32(0.4)) for m, p in zip(absolute.masks, absolute.probabilities))


def test_pipeline_save_load_round_trip(tmp_path, tiny_pipeline, support, queries):
    tiny_pipeline.save_pretrained(tmp_path)
    loaded = DiffewSPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    a, b = tiny_pipeline(queries, *support), loaded(queries, *support)
    assert all(np.array_equal(x, y) for x, y in zip(a.probabilities, b.probabilities))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_pipeline_tracks_float32(tiny_pipeline, support, queries, dtype):
    half = DiffewSPipeline(build_tiny_model(seed=0)).to(dtype=dtype)
    half.set_progress_bar_config(disable=True)
    ref, out = tiny_pipeline(queries, *support), half(queries, *support)
    assert half.dtype == dtype and half.model.prompt_embedding.dtype == dtype
    assert max(np.abs(a - b).max() for a, b in zip(ref.probabilities, out.probabilities)) < 0.05


def test_to_takes_a_device_and_a_dtype_by_position_or_name(support, queries):
    pipe = DiffewSPipeline(build_tiny_model(seed=0))
    assert pipe.to(torch.float64).dtype == torch.float64
    assert pipe.to("cpu", torch.float32).dtype == torch.float32 and pipe.device.type == "cpu"
    assert pipe.to(torch.bfloat16, "cpu").dtype == torch.bfloat16
    assert pipe.to(dtype=torch.float32).dtype == torch.float32
    assert pipe.to(None, torch.float64).dtype == torch.float64
    with pytest.raises(TypeError, match="one device and one dtype"):
        pipe.to(torch.float16, torch.float32)


def test_masks_may_come_as_one_stack(rng, tiny_pipeline, queries):
    images = [random_image(rng, 48, 64), random_image(rng, 48, 64)]
    masks = [box_mask(48, 64), box_mask(48, 64, 0.1, 0.6)]
    listed = tiny_pipeline(queries[:1], images, masks).probabilities[0]
    for stack in (np.stack(masks), torch.from_numpy(np.stack(masks)), np.stack(masks)[:, None]):
        assert np.array_equal(tiny_pipeline(queries[:1], images, stack).probabilities[0], listed)
    class_stack = tiny_pipeline.segment_classes(queries[:1], {"dog": (images, np.stack(masks))}).probabilities[0][0]
    assert np.array_equal(class_stack, listed)
    with pytest.raises(InputError, match=r"expected a \(H, W\) mask, got shape \(2, 48, 64\)"):  # a stack of another length
        tiny_pipeline(queries[:1], images[:1], np.stack(masks))
    with pytest.raises(InputError, match=r"expected a \(H, W\) mask, got shape \(3, 48, 64\)"):  # CHW: not a stack of one
        tiny_pipeline(queries[:1], images[:1], np.stack(masks + masks[:1]).astype(np.uint8) * 255)


def test_support_errors(tiny_pipeline, support, queries):
    images, masks = support
    with pytest.raises(InputError, match="no support images given"):
        tiny_pipeline(queries, [], [])
    with pytest.raises(InputError, match="2 support images but 1 support masks"):
        tiny_pipeline(queries, images, masks[:1])
    with pytest.raises(InputError, match=r"^support mask 2 is empty$"):
        tiny_pipeline(queries, images, [masks[0], np.zeros((10, 10), bool)])
    with pytest.raises(ValueError, match="not both"):
        tiny_pipeline(queries, images, masks, support=tiny_pipeline.encode_support(images, masks))
    with pytest.raises(InputError, match="give support_images and support_masks"):
        tiny_pipeline(queries)
    with pytest.raises(ValueError, match=r"threshold must lie in \[0, 1\]"):
        tiny_pipeline(queries, images, masks, threshold=1.5)
    with pytest.raises(InputError, match="query image 2: numpy images must be"):
        tiny_pipeline([queries[0], np.zeros((4, 4, 2), np.uint8)], images, masks)


def test_predict_takes_one_support_set_or_one_per_query(tiny_pipeline, support):
    one = tiny_pipeline.encode_support(*support)
    two = SupportContext({k: v.repeat(2, 1, 1) for k, v in one.keys.items()}, {k: v.repeat(2, 1, 1) for k, v in one.values.items()}, one.num_shots)
    size = tiny_pipeline.model.config.resolution
    queries = torch.zeros(4, 3, size, size)
    with pytest.raises(ValueError, match="a support context of 2 sets for 4 queries"):
        tiny_pipeline.predict(queries, two)
    assert tiny_pipeline.predict(queries[:2], two).mask_images.shape[0] == 2


def test_file_paths_are_accepted(tmp_path, tiny_pipeline, support, queries):
    images, masks = support
    images[0].save(tmp_path / "s.png")
    Image.fromarray(masks[0].astype(np.uint8) * 255).save(tmp_path / "m.png")
    queries[0].save(tmp_path / "q.png")
    from_files = tiny_pipeline(tmp_path / "q.png", [str(tmp_path / "s.png")], [tmp_path / "m.png"])
    from_objects = tiny_pipeline(queries[0], images[:1], masks[:1])
    assert np.array_equal(from_files.probabilities[0], from_objects.probabilities[0])
    Image.new("L", (8, 8)).save(tmp_path / "empty.png")
    with pytest.raises(InputError, match=r"support mask 1 \(.*empty\.png\) is empty"):
        tiny_pipeline(tmp_path / "q.png", [tmp_path / "s.png"], [tmp_path / "empty.png"])


@pytest.mark.parametrize("resolution", [100000, 2056, 12, 0, -64])
def test_working_resolution_out_of_range_is_an_input_error(tiny_pipeline, support, queries, resolution):
    images, masks = support
    message = f"resolution must be a multiple of 8 from 8 to 2048, got {resolution}"
    with pytest.raises(InputError, match=message):
        tiny_pipeline(queries, images, masks, resolution=resolution)
    with pytest.raises(InputError, match=message):
        tiny_pipeline.encode_support(images, masks, resolution=resolution)


def test_support_encoded_at_another_resolution_is_refused(tiny_pipeline, support, queries):
    context = tiny_pipeline.encode_support(*support, resolution=32)
    with pytest.raises(ValueError, match="must be encoded at the same working resolution"):
        tiny_pipeline(queries, support=context)


def test_support_labels_must_match_the_images(tiny_pipeline, support):
    with pytest.raises(InputError, match="^2 support images but 1 source labels$"):
        tiny_pipeline.encode_support(*support, sources=["a.png"])
