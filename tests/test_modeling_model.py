"""DiffewSModel: the support conv, OI2M arithmetic, loss, shot order, building, saving and loading."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from helpers import random_batch, random_masks

from diffews import DiffewSModel, InputError
from diffews._testing import build_tiny_model, save_tiny_stable_diffusion, tiny_clip_tokenizer, tiny_stable_diffusion
from diffews.modeling.oi2m import mask_latents_from_velocity, oi2m_scheduler, velocity_target
from diffews.modeling.prompt import check_prompt_embedding, empty_prompt_embedding, empty_prompt_ids
from diffews.modeling.support_conv import RoutedInputConv

R = 64


# ---------------------------------------------------------------- support input convolution


def test_conv_in_ref_init_reproduces_conv_in_on_duplicated_latent():
    model = build_tiny_model(seed=1)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.unet.conv_in_ref(torch.cat([x, x], dim=1)), model.unet.conv_in(x), atol=1e-6, rtol=1e-5)
    assert model.unet.conv_in_ref.in_channels == 8


def test_conv_in_routes_by_channel_count(tiny_model):
    conv = tiny_model.unet.conv_in
    assert isinstance(conv, RoutedInputConv)
    with torch.no_grad():
        query = torch.randn(1, 4, 8, 8)
        support = torch.randn(1, 8, 8, 8)
        torch.testing.assert_close(conv(query), F.conv2d(query, conv.weight, conv.bias, padding=1))
        torch.testing.assert_close(conv(support), tiny_model.unet.conv_in_ref(support))
        with pytest.raises(ValueError, match="UNet input has 5 channels; expected 4 .* or 8"):
            conv(torch.randn(1, 5, 8, 8))


def test_unet_state_dict_has_standard_keys_plus_conv_in_ref(tiny_model):
    keys = set(tiny_model.unet.state_dict())
    _, stock_unet, _ = tiny_stable_diffusion()
    assert keys - set(stock_unet.state_dict()) == {"conv_in_ref.weight", "conv_in_ref.bias"}
    assert set(stock_unet.state_dict()) <= keys


# ---------------------------------------------------------------- OI2M


def test_oi2m_schedule_has_zero_signal_and_v_target_is_minus_mask_latent():
    scheduler = oi2m_scheduler()
    assert torch.count_nonzero(scheduler.alphas_cumprod) == 0
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.num_train_timesteps == 1000
    masks, images = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    assert torch.equal(velocity_target(scheduler, masks, images, 1), -masks)
    assert torch.equal(mask_latents_from_velocity(scheduler, images, -masks, 1), masks)


def test_training_loss_is_mse_to_minus_query_mask_latent(tiny_model):
    query, query_mask = random_batch(0, (2, 3, R, R)), random_masks(1, (2, 1, R, R))
    support, support_mask = random_batch(2, (2, 2, 3, R, R)), random_masks(3, (2, 2, 1, R, R))
    with torch.no_grad():
        loss = tiny_model.training_loss(query, query_mask, support, support_mask, sample_latents=False)
        # Independent route through the public inference API: the query pass predicts x0 = -v.
        context = tiny_model.support_context(
            tiny_model.encode_images(support.flatten(0, 1)).unflatten(0, (2, 2)),
            tiny_model.encode_masks(support_mask.flatten(0, 1)).unflatten(0, (2, 2)),
        )
        predicted = tiny_model.predict_mask_latents(tiny_model.encode_images(query), context)
        target = tiny_model.encode_masks(query_mask)
    torch.testing.assert_close(loss, F.mse_loss(-predicted, -target), atol=1e-6, rtol=1e-5)
    # The sign matters: the same prediction scored against +mask latent is a different number.
    assert not torch.isclose(loss, F.mse_loss(-predicted, target))
    assert loss.dtype == torch.float32


def test_training_loss_gradients_reach_the_whole_unet_and_not_the_vae():
    model = build_tiny_model(seed=2)
    loss = model.training_loss(
        random_batch(0, (1, 3, R, R)), random_masks(1, (1, 1, R, R)),
        random_batch(2, (1, 3, 3, R, R)), random_masks(3, (1, 3, 1, R, R)),
        generator=torch.Generator().manual_seed(0),
    )
    loss.backward()
    missing = [name for name, p in model.unet.named_parameters() if p.grad is None]
    assert missing == []
    assert model.unet.conv_in_ref.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.vae.parameters())


# ---------------------------------------------------------------- shots, support pass


@torch.no_grad()
def test_shot_order_does_not_change_the_prediction(tiny_model):
    images, masks = random_batch(5, (1, 4, 3, R, R)), random_masks(6, (1, 4, 1, R, R))
    query_latents = tiny_model.encode_images(random_batch(7, (2, 3, R, R)))
    order = torch.tensor([2, 0, 3, 1])
    first = tiny_model.predict_mask_latents(query_latents, tiny_model.encode_support(images, masks))
    second = tiny_model.predict_mask_latents(query_latents, tiny_model.encode_support(images[:, order], masks[:, order]))
    torch.testing.assert_close(first, second, atol=1e-5, rtol=0)


@torch.no_grad()
def test_support_sets_pair_with_their_queries(tiny_model):
    """A context of S = B sets gives query b exactly what set b alone gives it."""
    images, masks = random_batch(8, (2, 2, 3, R, R)), random_masks(9, (2, 2, 1, R, R))
    query_latents = tiny_model.encode_images(random_batch(10, (2, 3, R, R)))
    paired = tiny_model.predict_mask_latents(query_latents, tiny_model.encode_support(images, masks))
    for b in range(2):
        alone = tiny_model.predict_mask_latents(query_latents[b : b + 1], tiny_model.encode_support(images[b : b + 1], masks[b : b + 1]))
        torch.testing.assert_close(paired[b : b + 1], alone, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- building, saving, loading


def test_save_load_round_trip_is_bit_exact(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "model")
    loaded = DiffewSModel.from_pretrained(tmp_path / "model")
    original, restored = tiny_model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    assert torch.equal(loaded.prompt_embedding, tiny_model.prompt_embedding)
    assert loaded.config == tiny_model.config
    assert torch.equal(loaded.scheduler.alphas_cumprod, tiny_model.scheduler.alphas_cumprod)
    with torch.no_grad():
        latents = tiny_model.encode_images(random_batch(11, (1, 3, R, R)))
        context = tiny_model.encode_support(random_batch(12, (1, 1, 3, R, R)), random_masks(13, (1, 1, 1, R, R)))
        context2 = loaded.encode_support(random_batch(12, (1, 1, 3, R, R)), random_masks(13, (1, 1, 1, R, R)))
        assert torch.equal(tiny_model.predict_mask_latents(latents, context), loaded.predict_mask_latents(latents, context2))
    files = {p.relative_to(tmp_path / "model").as_posix() for p in (tmp_path / "model").rglob("*") if p.is_file()}
    assert not any(f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl")) for f in files)
    assert {"diffews_config.json", "prompt_embedding.safetensors", "unet/diffusion_pytorch_model.safetensors"} <= files
    assert json.loads((tmp_path / "model/unet/config.json").read_text())["in_channels_ref"] == 8


def tree_state(folder):
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_interrupted_save_leaves_an_earlier_model_and_other_files_untouched(tmp_path, monkeypatch):
    """Ctrl-C while the VAE is written (config, prompt, scheduler and UNet already replaced): the
    folder is exactly as before, the user's own file included; into a new folder: nothing is left."""
    import diffews.modeling.diffews_model as model_module

    model, folder = build_tiny_model(seed=0), tmp_path / "model"
    model.save_pretrained(folder)
    (folder / "notes.txt").write_text("the user's own file")
    before = tree_state(folder)
    save_folder = model_module.save_safetensors_folder

    def interrupt_at_the_vae(state_dict, staged):
        if any(key.startswith("post_quant_conv") for key in state_dict):
            raise KeyboardInterrupt
        save_folder(state_dict, staged)

    monkeypatch.setattr(model_module, "save_safetensors_folder", interrupt_at_the_vae)
    with torch.no_grad():
        model.prompt_embedding.add_(1)  # a different model: every file would change
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(folder)
    assert tree_state(folder) == before
    assert sorted(p.name for p in folder.iterdir()) == ["diffews_config.json", "notes.txt", "prompt_embedding.safetensors", "scheduler", "unet", "vae"]
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(tmp_path / "new" / "model")
    assert not (tmp_path / "new" / "model").exists()


def test_from_pretrained_casts_dtype(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    loaded = DiffewSModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16 and loaded.prompt_embedding.dtype == torch.bfloat16


def test_from_stable_diffusion_folder(tmp_path):
    save_tiny_stable_diffusion(tmp_path / "sd", seed=4)
    model = DiffewSModel.from_stable_diffusion(tmp_path / "sd")
    vae, unet, text_encoder = tiny_stable_diffusion(seed=4)
    # The folder's tokenizer is used (its BOS/EOS ids are not SD's), padded to 77 as the authors trained.
    ids = torch.tensor([[188, 189] + [0] * 75])
    with torch.no_grad():
        expected = text_encoder(ids).last_hidden_state
    assert torch.equal(model.prompt_embedding, expected)
    assert model.prompt_embedding.shape == (1, 77, unet.config.cross_attention_dim)
    assert model.config.prompt == "padded"
    assert torch.equal(model.unet.conv_in.weight, unet.conv_in.weight)
    assert torch.equal(model.unet.conv_in_ref.weight, torch.cat([unet.conv_in.weight] * 2, dim=1) / 2)
    assert torch.equal(model.unet.conv_in_ref.bias, unet.conv_in.bias)
    assert model.config.base_model == str(tmp_path / "sd")


def test_empty_prompt_ids_are_sd21s():
    ids = empty_prompt_ids()
    assert ids.shape == (1, 77)
    assert ids[0, :2].tolist() == [49406, 49407] and ids[0, 2:].eq(0).all()
    assert empty_prompt_ids(padded=False).tolist() == [[49406, 49407]]


def test_unpadded_prompt_embedding_is_the_padded_ones_first_two_rows():
    """CLIP's text encoder is causal: [BOS, EOS] alone gives the first 2 rows of the padded embedding."""
    _, _, text_encoder = tiny_stable_diffusion(seed=2)
    tokenizer = tiny_clip_tokenizer()
    padded = empty_prompt_embedding(tokenizer, text_encoder, padded=True)
    unpadded = empty_prompt_embedding(tokenizer, text_encoder, padded=False)
    assert padded.shape == (1, 77, 32) and unpadded.shape == (1, 2, 32)
    torch.testing.assert_close(unpadded, padded[:, :2], rtol=0, atol=1e-5)
    without_tokenizer = empty_prompt_embedding(None, text_encoder, padded=False)
    with torch.no_grad():
        assert torch.equal(without_tokenizer, text_encoder(torch.tensor([[49406, 49407]])).last_hidden_state)


def test_the_authors_eval_prompt_of_a_padded_model_is_the_text_encoders_unpadded_one():
    vae, unet, text_encoder = tiny_stable_diffusion(seed=0)
    model = build_tiny_model(seed=0)
    unpadded = DiffewSModel.from_components(
        vae, unet, empty_prompt_embedding(None, text_encoder, padded=False), config=replace(model.config, prompt="authors-eval")
    ).eval()
    images, masks = random_batch(1, (1, 1, 3, 64, 64)), random_masks(2, (1, 1, 1, 64, 64))
    query = model.encode_images(random_batch(3, (1, 3, 64, 64)))
    padded_output = model.predict_mask_latents(query, model.encode_support(images, masks))
    model.use_authors_eval_prompt()
    assert model.config.prompt == "authors-eval" and model.prompt_embedding.shape == (1, 2, 32)
    output = model.predict_mask_latents(query, model.encode_support(images, masks))
    torch.testing.assert_close(output, unpadded.predict_mask_latents(query, unpadded.encode_support(images, masks)), rtol=0, atol=1e-5)
    assert (output - padded_output).abs().max() > 1e-3  # the two prompts condition differently
    model.use_authors_eval_prompt()  # no longer padded: unchanged
    assert model.prompt_embedding.shape == (1, 2, 32)


def test_the_prompt_setting_must_fit_the_stored_embedding(tmp_path, tiny_model):
    two_tokens = tiny_model.prompt_embedding[:, :2]
    with pytest.raises(ValueError, match="prompt embedding has 2 tokens, which does not fit prompt 'padded'"):
        DiffewSModel(tiny_model.vae, tiny_model.unet, two_tokens, config=tiny_model.config)
    check_prompt_embedding(two_tokens, "constant")  # a from-scratch model's fixed tensor may have any length
    tiny_model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m/diffews_config.json").read_text())
    (tmp_path / "m/diffews_config.json").write_text(json.dumps({**config, "prompt": "authors-eval"}))
    with pytest.raises(InputError, match=r"prompt_embedding.safetensors: prompt embedding has 77 tokens, which does not fit prompt 'authors-eval'"):
        DiffewSModel.from_pretrained(tmp_path / "m")


def test_a_folder_written_before_the_prompt_setting_loads_as_padded(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m/diffews_config.json").read_text())
    del config["prompt"]
    (tmp_path / "m/diffews_config.json").write_text(json.dumps(config))
    loaded = DiffewSModel.from_pretrained(tmp_path / "m")
    assert loaded.config.prompt == "padded" and torch.equal(loaded.prompt_embedding, tiny_model.prompt_embedding)


def test_from_stable_diffusion_names_missing_subfolders(tmp_path):
    save_tiny_stable_diffusion(tmp_path / "sd")
    for name in ("vae", "text_encoder"):
        for path in (tmp_path / "sd" / name).iterdir():
            path.unlink()
        (tmp_path / "sd" / name).rmdir()
    with pytest.raises(InputError, match=r"missing subfolder\(s\) vae/, text_encoder/"):
        DiffewSModel.from_stable_diffusion(tmp_path / "sd")


def test_from_pretrained_errors_are_one_line_and_name_the_problem(tmp_path, tiny_model):
    with pytest.raises(InputError, match="does-not-exist: no such local folder, and it is not a valid hub repository id either; use a folder written by save_pretrained, or fetch the authors' models with 'diffews download'"):
        DiffewSModel.from_pretrained(tmp_path / "does-not-exist")
    tiny_model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "prompt_embedding.safetensors").unlink()
    with pytest.raises(InputError, match="missing prompt_embedding.safetensors; is this a DiffewS model folder"):
        DiffewSModel.from_pretrained(tmp_path / "m")
    tiny_model.save_pretrained(tmp_path / "m2")
    config = json.loads((tmp_path / "m2/unet/config.json").read_text())
    (tmp_path / "m2/unet/config.json").write_text(json.dumps({**config, "layers_per_block": 2}))
    with pytest.raises(InputError, match="weights do not match its config.json") as error:
        DiffewSModel.from_pretrained(tmp_path / "m2")
    assert "\n" not in str(error.value)
    tiny_model.save_pretrained(tmp_path / "m3")
    (tmp_path / "m3/diffews_config.json").write_text(json.dumps({"resolution": 64, "colour": "red"}))
    with pytest.raises(InputError, match="unknown DiffewS config key"):
        DiffewSModel.from_pretrained(tmp_path / "m3")


def test_from_pretrained_refuses_pickle_only_weights(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    (tmp_path / "vae/diffusion_pytorch_model.safetensors").rename(tmp_path / "vae/diffusion_pytorch_model.bin")
    with pytest.raises(InputError, match="diffews reads safetensors weights only"):
        DiffewSModel.from_pretrained(tmp_path)


@torch.no_grad()
def test_images_are_encoded_on_the_vaes_own_device():
    """The trainer moves the VAE to the accelerator before the rest of the model, then caches latents:
    encoding must follow the VAE, not the prompt buffer that `DiffewSModel.device` reads."""
    model = build_tiny_model()
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    expected = model.encode_posterior(images)
    model.prompt_embedding = model.prompt_embedding.to("meta")  # the rest of the model elsewhere
    assert model.device.type == "meta"
    torch.testing.assert_close(model.encode_posterior(images), expected)
