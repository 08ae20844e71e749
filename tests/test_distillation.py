"""Distilling a small mask decoder: generated masks, IoU, training, saving, and use in the pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from diffews import DiffewSPipeline, InputError
from diffews._testing import build_tiny_model
from diffews.distillation import distill_mask_decoder, evaluate_mask_decoder, mask_iou, random_masks
from diffews.modeling.mask_decoder import FORMAT, MaskDecoder, MaskDecoderConfig, load_mask_decoder, save_mask_decoder

CONFIG = MaskDecoderConfig(widths=(8, 8, 8))


@pytest.fixture(scope="module")
def model():
    return build_tiny_model(seed=0)


def test_random_masks_are_binary_nonempty_and_reproducible():
    masks = random_masks(6, 32, torch.Generator().manual_seed(3))
    again = random_masks(6, 32, torch.Generator().manual_seed(3))
    assert masks.shape == (6, 1, 32, 32)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert (masks.flatten(1).sum(1) > 0).all() and (masks.flatten(1).mean(1) < 1).any()
    assert torch.equal(masks, again)


def test_mask_iou_against_hand_computed_values():
    a = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    assert mask_iou(a, b).tolist() == pytest.approx([1 / 3, 1.0, 1.0])


def test_decoder_output_shape_and_range():
    latents = torch.randn(2, 4, 5, 6)
    probabilities = MaskDecoder(CONFIG)(latents)
    assert probabilities.shape == (2, 1, 40, 48)
    assert probabilities.min() >= 0 and probabilities.max() <= 1


def test_distillation_moves_the_student_towards_the_vae_decoder(model):
    torch.manual_seed(0)
    untrained = evaluate_mask_decoder(model, MaskDecoder(CONFIG).eval(), count=16, resolution=32)
    trained = distill_mask_decoder(model, CONFIG, steps=60, batch_size=4, resolution=32, progress=False)
    metrics = evaluate_mask_decoder(model, trained, count=16, resolution=32)
    assert metrics["mean_abs_probability_error"] < 0.9 * untrained["mean_abs_probability_error"]
    assert 0 <= metrics["min_iou_vs_vae_decoder"] <= metrics["iou_vs_vae_decoder"] <= 1


def test_save_and_load_round_trip(tmp_path):
    decoder = MaskDecoder(CONFIG)
    path = save_mask_decoder(decoder, tmp_path / "d.safetensors", {"iou_vs_vae_decoder": 0.9})
    loaded, metrics = load_mask_decoder(path)
    assert loaded.config == CONFIG and metrics == {"iou_vs_vae_decoder": 0.9}
    for name, tensor in decoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)


def test_loading_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(InputError, match="no such mask decoder file"):
        load_mask_decoder(tmp_path / "missing.safetensors")
    save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(InputError, match="not a DiffewS mask decoder"):
        load_mask_decoder(tmp_path / "other.safetensors")


def test_pipeline_decodes_with_the_mask_decoder(model):
    torch.manual_seed(0)
    decoder = MaskDecoder(CONFIG)
    pipe = DiffewSPipeline(model, mask_decoder=decoder)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    mask = np.zeros((64, 64), bool)
    mask[8:40, 8:40] = True
    out = pipe(images[:2], [images[2]], [mask], output_latents=True)
    expected = decoder(out.mask_latents)[:, 0].detach().numpy()  # query size = working size: no resize
    np.testing.assert_allclose(np.stack(out.probabilities), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "no 'config' entry"), ("{not json", "Expecting property name"), ('{"widths": [8], "depth": 3}', "unexpected keyword"),
        ('{"widths": []}', "index out of range"),
    ],
)
def test_loading_damaged_metadata_is_one_input_error(tmp_path, config, message):
    decoder = MaskDecoder(CONFIG)
    metadata = {"format": FORMAT} | ({} if config is None else {"config": config})
    save_file(decoder.state_dict(), tmp_path / "d.safetensors", metadata)
    with pytest.raises(InputError, match=f"d.safetensors: damaged mask decoder metadata \\(.*{message}"):
        load_mask_decoder(tmp_path / "d.safetensors")


def test_weights_that_do_not_fit_the_stored_config_name_the_mismatch(tmp_path):
    """The message kept only PyTorch's first line, "Error(s) in loading state_dict for MaskDecoder:"."""
    weights = MaskDecoder(CONFIG).state_dict()
    weights.pop(next(iter(weights)))
    metadata = {"format": FORMAT, "config": json.dumps({"widths": list(CONFIG.widths)})}
    save_file(weights, tmp_path / "d.safetensors", metadata)
    with pytest.raises(InputError, match=r"d\.safetensors: weights do not match the stored config \(Error\(s\) in loading state_dict "
                       r"for MaskDecoder: Missing key\(s\) in state_dict"):
        load_mask_decoder(tmp_path / "d.safetensors")


def test_from_pretrained_takes_a_mask_decoder(model, tmp_path):
    model.save_pretrained(tmp_path / "model")
    decoder = MaskDecoder(CONFIG)
    pipe = DiffewSPipeline.from_pretrained(tmp_path / "model", mask_decoder=decoder)
    assert pipe.mask_decoder is decoder
    with pytest.raises(ValueError, match="latent channels"):
        DiffewSPipeline.from_pretrained(tmp_path / "model", mask_decoder=MaskDecoder(MaskDecoderConfig(latent_channels=8)))
