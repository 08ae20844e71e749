"""Fake files in the authors' layouts: their UNet folders, a clone of their weights, a hub cache snapshot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from diffews._testing import save_tiny_stable_diffusion, tiny_stable_diffusion

AUTHORS_CLASS = "UNet2DConditionModelRef"  # their customised class: not a diffusers name
AUTHORS_BASE = "stable-diffusion-2-1-ref8inchannels-tag4inchannels"
FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def authors_unet_state(seed: int = 6) -> tuple[dict, dict[str, torch.Tensor]]:
    """Config and weights in the authors' layout: standard keys + a *random* conv_in_ref (8 -> C)."""
    _, unet, _ = tiny_stable_diffusion(seed)
    config = {**dict(unet.config), "_class_name": AUTHORS_CLASS, "in_channels_ref": 8}
    generator = torch.Generator().manual_seed(seed)
    state = dict(unet.state_dict())
    state["conv_in_ref.weight"] = torch.randn((unet.conv_in.out_channels, 8, 3, 3), generator=generator) * 0.1
    state["conv_in_ref.bias"] = torch.randn((unet.conv_in.out_channels,), generator=generator) * 0.1
    return config, state


def write_unet(folder: Path, config: dict, state: dict, pickled: bool = False) -> Path:
    """A UNet folder as diffusers saves it: config.json + safetensors (or a pickled .bin)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, default=list))
    if pickled:
        torch.save(state, folder / "diffusion_pytorch_model.bin")
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, folder / "diffusion_pytorch_model.safetensors")
    return folder


def write_authors_checkpoint(root: Path) -> dict:
    """A tiny checkpoint in the authors' layout under `root`: ``base/`` (SD-2.1-shaped VAE, text encoder
    and tokenizer), ``unet/`` (safetensors) and ``unet_bin/`` (pickled); with the UNet's config and state."""
    config, state = authors_unet_state()
    return {
        "base": tiny_base(root),
        "unet": write_unet(root / "unet", config, state),
        "unet_bin": write_unet(root / "unet_bin", config, state, pickled=True),
        "config": config,
        "state": state,
    }


CLONE_MODELS = {
    # folder: (seed, pickled, nested unet/unet/ as their evaluation script's subfolder="unet" reads it)
    "coco_fold0": (10, False, False),
    "coco_fold1": (11, True, False),
    "coco_fold2": (12, False, True),
    "coco_fold3": (13, True, True),
    "incontext": (14, False, False),
}


def write_authors_clone(root: Path, base: Path | None = None, models: dict = CLONE_MODELS) -> dict[str, dict]:
    """A clone of the authors' repository: ``weight/<model>/unet`` for every model, ``weight/<AUTHORS_BASE>``
    (a copy of `base`, a tiny SD folder) when given, and a ``.git`` folder. Returns each model's weights."""
    weight = root / "weight"
    states = {}
    for name, (seed, pickled, nested) in models.items():
        config, state = authors_unet_state(seed)
        unet = weight / name / "unet"
        write_unet(unet / "unet" if nested else unet, config, state, pickled)
        states[name] = state
    if base is not None:
        shutil.copytree(base, weight / AUTHORS_BASE)
    (root / ".git" / "lfs" / "objects").mkdir(parents=True)
    (root / "README.md").write_text("the authors' weights\n")
    return states


def write_hub_snapshot(cache: Path, repo_id: str, source: Path) -> Path:
    """`source` as huggingface_hub's cache holds a downloaded repository (``refs/main`` + a snapshot)."""
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = storage / "snapshots" / FAKE_COMMIT
    shutil.copytree(source, snapshot)
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(FAKE_COMMIT)
    return snapshot


def tiny_base(root: Path) -> Path:
    """A tiny Stable Diffusion folder (vae/, unet/, text_encoder/, tokenizer/, scheduler/) under `root`."""
    return save_tiny_stable_diffusion(root / "sd", seed=5)
