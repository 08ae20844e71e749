"""Converting the authors' checkpoint layout, checked against an independent two-pass reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from authors_fixtures import authors_unet_state, write_unet
from diffusers import AutoencoderKL, UNet2DConditionModel
from helpers import random_batch, random_masks
from transformers import CLIPTextConfig, CLIPTextModel

from diffews import DiffewSModel, DiffewSPipeline, InputError
from diffews.cli.main import main
from diffews.modeling.convert import convert_authors_checkpoint, load_authors_unet
from diffews.modeling.tiny import TINY_TEXT_CONFIG, save_tiny_stable_diffusion

R = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("authors")
    config, state = authors_unet_state()
    return {
        "base": save_tiny_stable_diffusion(root / "base", seed=5),
        "unet": write_unet(root / "unet", config, state),
        "unet_bin": write_unet(root / "unet_bin", config, state, pickled=True),
        "config": config,
        "state": state,
    }


# ---------------------------------------------------------------- the independent reference


class BankingAttention:
    """Reference self-attention: banks K/V while writing, attends over [own, banked...] while reading."""

    def __init__(self, bank: list, mode: dict) -> None:
        self.bank, self.mode = bank, mode

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        if self.mode["write"]:
            self.bank.append((k, v))
        else:
            k = torch.cat([k] + [bk.expand(k.shape[0], -1, -1) for bk, _ in self.bank], dim=1)
            v = torch.cat([v] + [bv.expand(v.shape[0], -1, -1) for _, bv in self.bank], dim=1)
        batch, heads = q.shape[0], attn.heads
        dim = q.shape[-1] // heads
        qh, kh, vh = (t.reshape(batch, -1, heads, dim).permute(0, 2, 1, 3) for t in (q, k, v))
        weights = torch.softmax(qh @ kh.transpose(-1, -2) / dim**0.5, dim=-1)
        out = (weights @ vh).permute(0, 2, 1, 3).reshape(batch, -1, heads * dim)
        return attn.to_out[1](attn.to_out[0](out))


@torch.no_grad()
def reference_mask_latents(checkpoint, support_images, support_masks, queries) -> torch.Tensor:
    """The authors' procedure, written independently: per-shot support passes through conv_in_ref
    that bank K/V in every attn1, then one query pass through conv_in reading them; mask latent = -v."""
    base = checkpoint["base"]
    vae = AutoencoderKL.from_pretrained(base / "vae")
    text_encoder = CLIPTextModel.from_pretrained(base / "text_encoder")
    ids = torch.tensor([[49406, 49407] + [0] * 75])
    text = text_encoder(ids).last_hidden_state

    config = {k: v for k, v in checkpoint["config"].items() if not k.startswith("_") and k != "in_channels_ref"}
    unet = UNet2DConditionModel.from_config(config)
    state = dict(checkpoint["state"])
    ref_weight, ref_bias = state.pop("conv_in_ref.weight"), state.pop("conv_in_ref.bias")
    unet.load_state_dict(state)
    conv_in = unet.conv_in
    conv_in_ref = torch.nn.Conv2d(8, conv_in.out_channels, 3, padding=1)
    conv_in_ref.weight.copy_(ref_weight)
    conv_in_ref.bias.copy_(ref_bias)

    def latent(x):
        return vae.encode(x).latent_dist.mean * vae.config.scaling_factor

    mode = {"write": True}
    processors = {}
    for name in unet.attn_processors:
        processors[name] = BankingAttention([], mode) if name.endswith("attn1.processor") else unet.attn_processors[name]
    unet.set_attn_processor(processors)

    unet.conv_in = conv_in_ref
    for image, mask in zip(support_images, support_masks):
        mask_image = (mask * 2 - 1).expand(3, -1, -1)
        sample = torch.cat([latent(image[None]), latent(mask_image[None])], dim=1)
        unet(sample, 1, encoder_hidden_states=text)
    unet.conv_in = conv_in
    mode["write"] = False
    velocity = unet(latent(queries), 1, encoder_hidden_states=text.expand(len(queries), -1, -1)).sample
    return -velocity


@torch.no_grad()
@pytest.mark.parametrize("shots", [1, 5])
def test_converted_model_matches_the_reference_procedure(tmp_path, checkpoint, shots):
    assert main(["convert", "--unet", str(checkpoint["unet"]), "--base", str(checkpoint["base"]), "--out", str(tmp_path / "m"), "--resolution", str(R)]) == 0
    model = DiffewSPipeline.from_pretrained(tmp_path / "m").model
    images, masks = random_batch(shots, (shots, 3, R, R)), random_masks(shots + 1, (shots, 1, R, R))
    queries = random_batch(shots + 2, (2, 3, R, R))
    ours = model.predict_mask_latents(model.encode_images(queries), model.encode_support(images[None], masks[None]))
    reference = reference_mask_latents(checkpoint, images, masks, queries)
    difference = (ours - reference).abs().max().item()
    print(f"\n{shots}-shot max |ours - reference| = {difference:.3e}")
    assert difference <= 1e-5


def test_pickled_unet_converts_to_the_same_weights(checkpoint):
    from_safetensors = load_authors_unet(checkpoint["unet"]).state_dict()
    from_pickle = load_authors_unet(checkpoint["unet_bin"]).state_dict()
    assert from_safetensors.keys() == from_pickle.keys()
    assert all(torch.equal(from_safetensors[k], from_pickle[k]) for k in from_safetensors)


def test_convert_save_load_round_trip_is_bit_exact(tmp_path, checkpoint):
    converted = convert_authors_checkpoint(checkpoint["unet"], checkpoint["base"])
    converted.save_pretrained(tmp_path / "m")
    loaded = DiffewSModel.from_pretrained(tmp_path / "m")
    a, b = converted.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(converted.prompt_embedding, loaded.prompt_embedding)
    assert torch.equal(loaded.unet.conv_in_ref.weight, checkpoint["state"]["conv_in_ref.weight"])
    assert not list((tmp_path / "m").rglob("*.bin"))


# ---------------------------------------------------------------- errors


def expect_convert_error(capsys, unet: Path, base: Path, out: Path, message: str) -> None:
    capsys.readouterr()  # drop what building the fixtures printed
    assert main(["convert", "--unet", str(unet), "--base", str(base), "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not out.exists()


def test_unet_without_conv_in_ref(tmp_path, capsys, checkpoint):
    state = {k: v for k, v in checkpoint["state"].items() if not k.startswith("conv_in_ref")}
    unet = write_unet(tmp_path / "unet", checkpoint["config"], state)
    expect_convert_error(capsys, unet, checkpoint["base"], tmp_path / "out", "no conv_in_ref weights; this is not a DiffewS UNet")


def test_wrong_channel_counts(tmp_path, capsys, checkpoint):
    state = dict(checkpoint["state"])
    state["conv_in_ref.weight"] = state["conv_in_ref.weight"][:, :6]
    unet = write_unet(tmp_path / "unet", checkpoint["config"], state)
    expect_convert_error(capsys, unet, checkpoint["base"], tmp_path / "out", "conv_in_ref takes 6 input channels but conv_in takes 4")


def test_base_with_another_cross_attention_width(tmp_path, capsys, checkpoint):
    base = save_tiny_stable_diffusion(tmp_path / "base")
    CLIPTextModel(CLIPTextConfig(**{**TINY_TEXT_CONFIG, "hidden_size": 48, "projection_dim": 48})).save_pretrained(base / "text_encoder")
    expect_convert_error(capsys, checkpoint["unet"], base, tmp_path / "out", "text encoder width 48 does not match the UNet's cross-attention width 32")


def test_base_missing_subfolders(tmp_path, capsys, checkpoint):
    (tmp_path / "base").mkdir()
    expect_convert_error(capsys, checkpoint["unet"], tmp_path / "base", tmp_path / "out", "missing subfolder(s) vae/, text_encoder/")


def test_pickle_with_non_tensor_entries_is_refused(tmp_path, capsys, checkpoint):
    unet = write_unet(tmp_path / "unet", checkpoint["config"], {**checkpoint["state"], "epoch": 3}, pickled=True)
    expect_convert_error(capsys, unet, checkpoint["base"], tmp_path / "out", "refused, entry 'epoch' is a int, not a tensor")


def test_pickle_with_code_is_refused(tmp_path, capsys, checkpoint):
    unet = write_unet(tmp_path / "unet", checkpoint["config"], {"weights": checkpoint["state"], "extra": Path("x")}, pickled=True)
    expect_convert_error(capsys, unet, checkpoint["base"], tmp_path / "out", "refused, not a plain file of tensors")


def test_existing_output_folder_is_left_alone(tmp_path, capsys, checkpoint):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    assert main(["convert", "--unet", str(checkpoint["unet"]), "--base", str(checkpoint["base"]), "--out", str(tmp_path / "out")]) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]


def test_missing_unet_config(tmp_path, capsys, checkpoint):
    (tmp_path / "unet").mkdir()
    expect_convert_error(capsys, tmp_path / "unet", checkpoint["base"], tmp_path / "out", "no config.json; expected the authors' unet/ folder")


def test_converted_folder_segments_from_the_command_line(tmp_path, checkpoint):
    assert main(["convert", "--unet", str(checkpoint["unet_bin"]), "--base", str(checkpoint["base"]), "--out", str(tmp_path / "m"), "--resolution", str(R)]) == 0
    examples = Path(__file__).resolve().parents[1] / "examples"
    args = ["segment", "--model", str(tmp_path / "m"), "--support", str(examples / "support/ladybird_1.jpg"),
            str(examples / "support/ladybird_1_mask.png"), "--query", str(examples / "query/meadow_1.jpg"), "--out", str(tmp_path / "o")]
    assert main(args) == 0
    assert (tmp_path / "o/meadow_1_mask.png").is_file()
