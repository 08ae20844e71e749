"""Converting the authors' checkpoint layout, checked against an independent two-pass reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from authors_fixtures import write_authors_checkpoint, write_unet
from authors_reference import AuthorsReference
from helpers import random_batch, random_masks
from transformers import CLIPTextConfig, CLIPTextModel

from diffews import DiffewSModel, DiffewSPipeline
from diffews.cli.main import main
from diffews.modeling.convert import convert_authors_checkpoint, load_authors_unet
from diffews._testing import TINY_TEXT_CONFIG, save_tiny_stable_diffusion

R = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_authors_checkpoint(tmp_path_factory.mktemp("authors"))


# ---------------------------------------------------------------- against the independent reference


@torch.no_grad()
@pytest.mark.parametrize(("shots", "prompt"), [(1, None), (5, None), (2, "padded")])
def test_converted_model_matches_the_reference_procedure(tmp_path, checkpoint, shots, prompt):
    options = ["--prompt", prompt] if prompt else []
    assert main(["convert", "--unet", str(checkpoint["unet"]), "--base", str(checkpoint["base"]), "--out", str(tmp_path / "m"), "--resolution", str(R), *options]) == 0
    model = DiffewSPipeline.from_pretrained(tmp_path / "m").model
    assert model.config.prompt == (prompt or "authors-eval")
    assert model.prompt_embedding.shape[1] == (77 if prompt == "padded" else 2)
    images, masks = random_batch(shots, (shots, 3, R, R)), random_masks(shots + 1, (shots, 1, R, R))
    queries = random_batch(shots + 2, (2, 3, R, R))
    ours = model.predict_mask_latents(model.encode_images(queries), model.encode_support(images[None], masks[None]))
    reference = AuthorsReference(checkpoint["base"], checkpoint["config"], checkpoint["state"], padded_prompt=prompt == "padded")
    difference = (ours - reference.mask_latents(images, masks, queries)).abs().max().item()
    print(f"\n{shots}-shot, prompt {model.config.prompt}: max |ours - reference| = {difference:.3e}")
    assert difference <= 1e-5


def test_pickled_unet_converts_to_the_same_weights(checkpoint):
    from_safetensors = load_authors_unet(checkpoint["unet"]).state_dict()
    from_pickle = load_authors_unet(checkpoint["unet_bin"], allow_pickle=True).state_dict()
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


def expect_convert_error(capsys, unet: Path, base: Path, out: Path, message: str, *flags: str) -> None:
    capsys.readouterr()  # drop what building the fixtures printed
    assert main(["convert", "--unet", str(unet), "--base", str(base), "--out", str(out), *flags]) == 2
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
    expect_convert_error(capsys, unet, checkpoint["base"], tmp_path / "out", "refused, entry 'epoch' is a int, not a tensor", "--allow-pickle")


def test_pickle_with_code_is_refused(tmp_path, capsys, checkpoint):
    unet = write_unet(tmp_path / "unet", checkpoint["config"], {"weights": checkpoint["state"], "extra": Path("x")}, pickled=True)
    expect_convert_error(capsys, unet, checkpoint["base"], tmp_path / "out", "refused, not a plain file of tensors", "--allow-pickle")


def test_a_pickled_unet_is_read_only_when_asked(tmp_path, capsys, checkpoint, monkeypatch):
    """README: 'it unpickles nothing unless you ask'; a .bin used to be unpickled (weights_only=True) by default."""
    def no_unpickling(*args, **kwargs):
        raise AssertionError("unpickled without --allow-pickle")

    monkeypatch.setattr(torch, "load", no_unpickling)
    pickled = checkpoint["unet_bin"] / "diffusion_pytorch_model.bin"
    expect_convert_error(capsys, checkpoint["unet_bin"], checkpoint["base"], tmp_path / "out",
                         f"{pickled}: a pickle, which can run code when loaded, so diffews reads it only when asked: pass --allow-pickle")


def test_existing_output_folder_is_left_alone(tmp_path, capsys, checkpoint):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    assert main(["convert", "--unet", str(checkpoint["unet"]), "--base", str(checkpoint["base"]), "--out", str(tmp_path / "out")]) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]


def test_missing_unet_config(tmp_path, capsys, checkpoint):
    (tmp_path / "unet").mkdir()
    expect_convert_error(capsys, tmp_path / "unet", checkpoint["base"], tmp_path / "out", "no config.json; expected the authors' unet/ folder")


def copied_base(checkpoint, target: Path) -> Path:
    import shutil

    return Path(shutil.copytree(checkpoint["base"], target))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda base: (base / "vae" / "config.json").unlink(), "vae: no config.json;"),
        (lambda base: (base / "text_encoder" / "config.json").unlink(), "text_encoder: no config.json;"),
        (lambda base: (base / "vae" / "config.json").write_text('{"in_channels": 3,'), "vae: cannot load the VAE ("),
        (lambda base: (base / "text_encoder" / "config.json").write_text("[1, 2]"), ": cannot load its text encoder or tokenizer ("),
    ],
    ids=["vae-config-missing", "text-encoder-config-missing", "vae-config-truncated", "text-encoder-config-not-a-mapping"],
)
def test_a_damaged_base_is_one_line(tmp_path, capsys, checkpoint, damage, message):
    """Each was diffusers' or transformers' traceback."""
    base = copied_base(checkpoint, tmp_path / "base")
    damage(base)
    expect_convert_error(capsys, checkpoint["unet"], base, tmp_path / "out", message)


def test_a_damaged_unet_folder_is_one_line(tmp_path, capsys, checkpoint):
    """A config that is not a mapping, a shard index naming no files, a 1-D conv_in: each was a traceback."""
    unet = write_unet(tmp_path / "unet", checkpoint["config"], checkpoint["state"])
    (unet / "config.json").write_text("[1, 2]")
    expect_convert_error(capsys, unet, checkpoint["base"], tmp_path / "out", "config.json: not a UNet config (a JSON object of settings)")
    flat = write_unet(tmp_path / "flat", checkpoint["config"], {**checkpoint["state"], "conv_in.weight": torch.zeros(5)})
    expect_convert_error(capsys, flat, checkpoint["base"], tmp_path / "out", "conv_in.weight has shape (5,), not a convolution's")
    sharded = write_unet(tmp_path / "sharded", checkpoint["config"], checkpoint["state"])
    (sharded / "diffusion_pytorch_model.safetensors").unlink()
    (sharded / "diffusion_pytorch_model.safetensors.index.json").write_text('{"weight_map": {"conv_in.weight": 5}}')
    expect_convert_error(capsys, sharded, checkpoint["base"], tmp_path / "out", "damaged, it has no weight_map of tensor names to shard files")


def test_out_is_checked_before_the_conversion(tmp_path, capsys, checkpoint, monkeypatch):
    """A taken --out was found only after the UNet, VAE and text encoder had loaded (minutes at SD 2.1 size)."""
    import diffews.cli.convert as cli_convert

    def must_not_run(*args, **kwargs):
        raise AssertionError("converted before checking --out")

    monkeypatch.setattr(cli_convert, "convert_authors_checkpoint", must_not_run)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    assert main(["convert", "--unet", str(checkpoint["unet"]), "--base", str(checkpoint["base"]), "--out", str(tmp_path / "out")]) == 2
    assert "out: already exists and is not an empty folder; choose another --out" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")  # was 'cannot write here (File exists)', after the conversion
    assert main(["convert", "--unet", str(checkpoint["unet"]), "--base", str(checkpoint["base"]), "--out", str(tmp_path / "afile" / "m")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'afile'}: is a file, not a folder; cannot write {tmp_path / 'afile' / 'm'} inside it"


def test_converted_folder_segments_from_the_command_line(tmp_path, checkpoint):
    assert main(["convert", "--unet", str(checkpoint["unet_bin"]), "--base", str(checkpoint["base"]), "--out", str(tmp_path / "m"), "--resolution", str(R),
                 "--allow-pickle"]) == 0
    examples = Path(__file__).resolve().parents[1] / "examples"
    args = ["segment", "--model", str(tmp_path / "m"), "--support", str(examples / "support/gnome_dev_cdrom_audio_support_1.jpg"),
            str(examples / "support/gnome_dev_cdrom_audio_support_1_mask.png"), "--query", str(examples / "query/gnome_dev_cdrom_audio_query_1.jpg"), "--out", str(tmp_path / "o")]
    assert main(args) == 0
    assert (tmp_path / "o/gnome_dev_cdrom_audio_query_1_mask.png").is_file()
