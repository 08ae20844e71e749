"""`diffews train-autoencoder` and `diffews init-model`: a small VAE, then a from-scratch DiffewS model."""

from __future__ import annotations

import json

import pytest
import torch
from benchmark_data import write_custom
from diffusers import AutoencoderKL
from safetensors.torch import load_file

from diffews.cli.main import main
from diffews.modeling import DiffewSModel
from diffews.modeling.scratch import constant_prompt_embedding
from diffews.training.autoencoder import AutoencoderConfig, evaluate_autoencoder, latent_scaling_factor, load_pairs

UNET_CONFIG = dict(
    sample_size=4, in_channels=4, out_channels=4,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[8, 8, 16, 16], layers_per_block=1, attention_head_dim=[1, 1, 2, 2], cross_attention_dim=16,
    norm_num_groups=4, use_linear_projection=True, upcast_attention=True,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-step autoencoder run on a tiny custom dataset: (data root, output folder, exit status)."""
    root = tmp_path_factory.mktemp("ae")
    write_custom(root / "data", {"cat": 3, "dog": 3})
    out = root / "run"
    status = main([
        "train-autoencoder", "--root", str(root / "data"), "--output-dir", str(out), "--resolution", "32",
        "--block-out-channels", "8,8,16,16", "--norm-num-groups", "4", "--batch-size", "2", "--max-steps", "3",
        "--warmup-steps", "1", "--save-every", "2", "--val-images", "4",
    ])
    return root / "data", out, status


def test_autoencoder_run_saves_a_loadable_vae_with_its_report(trained):
    data, out, status = trained
    assert status == 0
    vae = AutoencoderKL.from_pretrained(out / "vae", use_safetensors=True)
    assert (vae.config.latent_channels, tuple(vae.config.block_out_channels)) == (4, (8, 8, 16, 16))
    report = json.loads((out / "vae" / "autoencoder_report.json").read_text())
    assert [entry["step"] for entry in report["history"]] == [2, 3]
    assert report["train_pairs"] == 6 and report["val_pairs"] == 4
    # the stored scaling factor is 1/std of the training posteriors' samples, recomputed here
    config = AutoencoderConfig().with_overrides({"root": str(data), "resolution": 32})
    images, masks = load_pairs(config.data, "trn")
    assert vae.config.scaling_factor == pytest.approx(latent_scaling_factor(vae, images, masks, seed=0), rel=1e-5)
    assert report["final"]["mask_iou"] == pytest.approx(evaluate_autoencoder(vae, images[:4], masks[:4])["mask_iou"], rel=1e-5)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp")]


def test_stop_at_ends_the_run_on_the_full_schedule(trained, tmp_path, monkeypatch):
    from diffews.training import autoencoder

    data = trained[0]
    saved = {}
    real_save = autoencoder._save

    def recording_save(vae, output, config, history, *counts):
        saved[(output.name, history[-1]["step"])] = {k: v.clone() for k, v in vae.state_dict().items()}
        real_save(vae, output, config, history, *counts)

    monkeypatch.setattr(autoencoder, "_save", recording_save)
    common = ["train-autoencoder", "--root", str(data), "--resolution", "32", "--block-out-channels", "8,8,16,16",
              "--norm-num-groups", "4", "--batch-size", "2", "--warmup-steps", "1", "--save-every", "2", "--val-images", "2"]
    assert main([*common, "--output-dir", str(tmp_path / "full"), "--max-steps", "4"]) == 0
    assert main([*common, "--output-dir", str(tmp_path / "stopped"), "--max-steps", "4", "--stop-at", "3"]) == 0
    assert main([*common, "--output-dir", str(tmp_path / "short"), "--max-steps", "3"]) == 0
    assert sorted(saved) == [("full", 2), ("full", 4), ("short", 2), ("short", 3), ("stopped", 2), ("stopped", 3)]
    report = json.loads((tmp_path / "stopped" / "vae" / "autoencoder_report.json").read_text())
    assert [entry["step"] for entry in report["history"]] == [2, 3]
    stopped = load_file(tmp_path / "stopped" / "vae" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(stopped[k], v) for k, v in saved[("stopped", 3)].items() if k in stopped)
    # the first two steps are the full run's (same warm-up and decay), the third a 4-step schedule's, not a 3-step one's
    assert all(torch.equal(saved[("stopped", 2)][k], v) for k, v in saved[("full", 2)].items())
    assert not all(torch.equal(saved[("stopped", 3)][k], v) for k, v in saved[("short", 3)].items())


def test_a_stop_after_the_schedule_is_refused(capsys):
    assert main(["train-autoencoder", "--max-steps", "10", "--warmup-steps", "0", "--stop-at", "11"]) == 2
    assert capsys.readouterr().err == "error: command line: stop_at must be null or in [1, max_steps], got 11\n"


def test_a_second_run_into_the_same_folder_keeps_the_first_autoencoder(trained, capsys):
    data, out, _ = trained
    before = {p.name: p.read_bytes() for p in (out / "vae").iterdir()}
    args = ["train-autoencoder", "--root", str(data), "--output-dir", str(out), "--resolution", "32", "--max-steps", "1", "--warmup-steps", "0"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {out / 'vae'}: already holds an autoencoder; choose another output_dir"
    assert {p.name: p.read_bytes() for p in (out / "vae").iterdir()} == before


def test_an_output_dir_that_is_a_file_is_refused_before_reading_the_data(trained, tmp_path, capsys, monkeypatch):
    from diffews.training import autoencoder

    data, _, _ = trained
    (tmp_path / "taken").write_text("mine")
    monkeypatch.setattr(autoencoder, "load_pairs", lambda *args: pytest.fail("read the data before checking the output"))
    args = ["train-autoencoder", "--root", str(data), "--output-dir", str(tmp_path / "taken" / "run"), "--resolution", "32"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {tmp_path / 'taken'}: is a file, not a folder; choose another output_dir"
    assert (tmp_path / "taken").read_text() == "mine"


def test_round_trip_metrics_match_a_direct_computation():
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",), norm_num_groups=4, latent_channels=4)
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    masks = torch.rand(3, 1, 16, 16) > 0.5
    with torch.no_grad():
        inputs = torch.cat([images.float() / 127.5 - 1, (masks.float() * 2 - 1).expand(-1, 3, -1, -1)])
        decoded = vae.decode(vae.encode(inputs).latent_dist.mean).sample
    predicted = ((decoded[3:].clamp(-1, 1) + 1) / 2).mean(dim=1, keepdim=True) > 0.5
    iou = 100 * (predicted & masks).sum().item() / (predicted | masks).sum().item()
    mse = (((decoded[:3].clamp(-1, 1) - inputs[:3]) / 2) ** 2).mean().item()
    metrics = evaluate_autoencoder(vae, images, masks, batch_size=2)
    assert metrics["mask_iou"] == pytest.approx(iou)
    assert metrics["image_psnr"] == pytest.approx(10 * torch.log10(torch.tensor(1 / mse)).item(), rel=1e-4)


def test_widths_parse_from_yaml_and_flags_and_bad_ones_name_the_option(tmp_path, capsys):
    config = AutoencoderConfig.from_yaml("model:\n  block_out_channels: [8, 16, 32, 32]\n")
    assert config.model.block_out_channels == (8, 16, 32, 32)
    assert AutoencoderConfig.from_yaml(config.to_yaml()) == config
    assert main(["train-autoencoder", "--block-out-channels", "8,x", "--print-config"]) == 2
    assert "error: command line: block_out_channels must be a list of integers, got '8,x'" in capsys.readouterr().err
    assert main(["train-autoencoder", "--block-out-channels", "8,16", "--print-config"]) == 2
    assert "block_out_channels must be 4 widths (/8 downsampling), got (8, 16)" in capsys.readouterr().err
    for flags, message in [
        (["--norm-num-groups", "0"], "norm_num_groups must be >= 1, got 0"),
        (["--block-out-channels=-16,-32,-64,-64", "--norm-num-groups", "8"], "block_out_channels must be widths >= 1, got (-16, -32, -64, -64)"),
        (["--seed", str(2**32)], f"seed must be in [0, 2**32), got {2**32}"),
        (["--mask-weight", "inf"], "mask_weight must be >= 0 and finite, got inf"),  # trained to NaN weights, exit 0
        (["--learning-rate", "nan"], "learning_rate must be > 0 and finite, got nan"),
        (["--threads", "100000000000"], "threads must be null or in 1..4096, got 100000000000"),  # an overflow traceback
    ]:
        assert main(["train-autoencoder", *flags, "--print-config"]) == 2
        assert capsys.readouterr().err == f"error: command line: {message}\n"


def test_init_model_writes_a_loadable_from_scratch_model(trained, tmp_path, capsys):
    _, out, _ = trained
    unet_config = tmp_path / "unet.json"
    unet_config.write_text(json.dumps(UNET_CONFIG))
    target = tmp_path / "init"
    assert main(["init-model", "--vae", str(out / "vae"), "--unet-config", str(unet_config), "--resolution", "32",
                 "--prompt-seed", "7", "--out", str(target)]) == 0
    model = DiffewSModel.from_pretrained(target)
    assert model.config.resolution == 32
    assert tuple(model.unet.config.block_out_channels) == (8, 8, 16, 16)
    assert torch.equal(model.prompt_embedding, constant_prompt_embedding(16, "random", 7))
    assert model.config.prompt == "constant"  # no text encoder's prompt: neither the authors' padded nor unpadded one
    assert torch.equal(model.unet.conv_in_ref.weight[:, :4], model.unet.conv_in.weight / 2)
    vae_weights = load_file(out / "vae" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(model.vae.state_dict()[k], v) for k, v in vae_weights.items())
    assert "wrote" in capsys.readouterr().out


def test_init_model_errors_are_one_line(tmp_path, capsys):
    assert main(["init-model", "--vae", str(tmp_path), "--unet-config", "x.json", "--resolution", "32", "--out", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path}: not a diffusers autoencoder folder (no config.json)"
    assert not (tmp_path / "m").exists()
    assert torch.equal(constant_prompt_embedding(8, "zeros"), torch.zeros(1, 77, 8))


@pytest.mark.parametrize(("flag", "name"), [("--seed", "seed"), ("--prompt-seed", "prompt seed")])
def test_init_model_seeds_out_of_range_are_one_line(trained, tmp_path, capsys, flag, name):
    """A prompt seed of 2**64 was a RuntimeError traceback from torch's generator."""
    _, out, _ = trained
    path = tmp_path / "unet.json"
    path.write_text(json.dumps(UNET_CONFIG))
    args = ["init-model", "--vae", str(out / "vae"), "--unet-config", str(path), "--resolution", "32", "--out", str(tmp_path / "m")]
    assert main([*args, flag, str(2**64)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {name} must be in 0..2**63-1, got {2**64}"
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([1, 2], "not a UNet config (a JSON object of settings)"),
        ({"attention_head_dim": 0}, "cannot build the UNet it describes (ZeroDivisionError"),
        ({"block_out_channels": [], "down_block_types": [], "up_block_types": []}, "cannot build the UNet it describes (ValueError"),
    ],
    ids=["list", "zero-head-dim", "no-blocks"],
)
def test_init_model_unet_configs_it_cannot_build_are_one_line(trained, tmp_path, capsys, config, message):
    """The first two were tracebacks (AttributeError, ZeroDivisionError)."""
    _, out, _ = trained
    path = tmp_path / "unet.json"
    path.write_text(json.dumps({**UNET_CONFIG, **config} if isinstance(config, dict) else config))
    assert main(["init-model", "--vae", str(out / "vae"), "--unet-config", str(path), "--resolution", "32", "--out", str(tmp_path / "m")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: {message}"), lines
    assert not (tmp_path / "m").exists()


def test_the_built_in_model_configs_load():
    from pathlib import Path

    from diffews.training.config import BENCHMARKS, TrainConfig

    if "composite" not in BENCHMARKS:
        pytest.skip("the composite benchmark reader (diffews data composite) is not in this checkout")
    configs = Path(__file__).resolve().parents[1] / "configs" / "icons"
    autoencoder = AutoencoderConfig.load(configs / "autoencoder.yaml")
    assert (autoencoder.data.benchmark, autoencoder.data.fold, autoencoder.model.block_out_channels) == ("composite", 0, (16, 32, 64, 64))
    assert (autoencoder.optim.max_steps, autoencoder.optim.stop_at) == (600, 400)  # the shipped VAE: step 400 of 600
    for train_config in ("fold0.yaml", "fold0-continue.yaml", "fold0-w44.yaml"):
        unet = TrainConfig.load(configs / train_config)
        assert (unet.data.fold, unet.data.cache_latents, unet.model.resolution) == (0, True, 128), train_config
    first = TrainConfig.load(configs / "fold0-w44.yaml")
    assert (first.optim.learning_rate, first.optim.max_steps, first.model.pretrained) == (3e-4, 11000, "outputs/icons-w44-init")
    second = TrainConfig.load(configs / "fold0-w44-256.yaml")  # the first run, then these steps at 256 px
    assert (second.model.resolution, second.optim.learning_rate, second.optim.warmup_steps, second.optim.max_steps) == (256, 1e-4, 100, 2000)
    assert (second.model.pretrained, second.data.cache_latents, second.optim.batch_size) == ("outputs/icons-w44-128", True, 8)
    third = TrainConfig.load(configs / "fold0-w44-256-more.yaml")  # the shipped UNet: these steps after the second run's
    assert third.model.pretrained == "outputs/icons-w44-256/model" and third.optim.max_steps == 2500
    assert third.checkpointing.output_dir == "outputs/icons-w44-256-more" and third.validation.val_every == 500
    assert third.to_dict() == second.with_overrides({
        "pretrained": "outputs/icons-w44-256/model", "max_steps": 2500, "val_every": 500, "output_dir": "outputs/icons-w44-256-more",
    }).to_dict()
    several_shots = TrainConfig.load(configs / "fold0-w44-256-shots.yaml")  # tried after the third: K in 1..5 shots per step
    assert several_shots.to_dict() == third.with_overrides({
        "pretrained": "outputs/icons-w44-256-more/model", "shots": 5, "max_steps": 1100, "output_dir": "outputs/icons-w44-256-shots",
    }).to_dict()
    budget_first = TrainConfig.load(configs / "fold0-w44-3h.yaml")  # the ~3 h recipe: fewer 128 px steps, more 256 px ones
    assert budget_first.to_dict() == first.with_overrides({"max_steps": 4000, "output_dir": "outputs/icons-w44-3h"}).to_dict()
    budget_second = TrainConfig.load(configs / "fold0-w44-3h-256.yaml")
    assert budget_second.to_dict() == second.with_overrides({
        "pretrained": "outputs/icons-w44-3h/model", "max_steps": 4000, "output_dir": "outputs/icons-w44-3h-256",
    }).to_dict()
    assert json.loads((configs / "unet.json").read_text())["block_out_channels"] == [32, 64, 128, 128]
    assert json.loads((configs / "unet-w44.json").read_text())["block_out_channels"] == [44, 88, 176, 176]
