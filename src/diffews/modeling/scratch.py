"""A DiffewS model built from scratch: a trained small VAE, a random UNet and a constant prompt embedding.

Where Stable Diffusion 2.1 cannot be used (too large, or not reachable), DiffewS can still be
trained from scratch with the same model code: `diffews train-autoencoder` trains the VAE, and
`build_scratch_model` adds a randomly initialised UNet of SD 2.1's structure (any widths, from a
diffusers UNet config) and, in the place of the text encoder's empty-prompt embedding, a fixed
tensor of shape ``(1, tokens, cross_attention_dim)``:

- ``"random"`` (default): standard normal values drawn from a generator seeded with ``prompt_seed``,
  so the cross-attention layers see fixed, distinct tokens they can learn to use as constant memory;
- ``"zeros"``: all zeros (every cross-attention then adds only a constant).

No text encoder is involved; the embedding is stored with the model like SD's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from ..errors import InputError, first_line
from ..paths import user_path
from .config import DiffewSConfig
from .diffews_model import DiffewSModel, load_component
from .prompt import PROMPT_CONSTANT
from .weights import read_json

PromptKind = Literal["random", "zeros"]
PROMPT_KINDS: tuple[str, ...] = ("random", "zeros")
PROMPT_TOKENS = 77


def constant_prompt_embedding(width: int, kind: PromptKind = "random", seed: int = 0, tokens: int = PROMPT_TOKENS) -> torch.Tensor:
    """The fixed conditioning of a from-scratch model, ``(1, tokens, width)`` float32 (see the module docstring)."""
    if kind == "zeros":
        return torch.zeros(1, tokens, width)
    if kind != "random":
        raise ValueError(f"prompt kind must be one of {', '.join(PROMPT_KINDS)}, got {kind!r}")
    return torch.randn(1, tokens, width, generator=torch.Generator().manual_seed(seed))


def build_scratch_model(
    vae_folder: str | Path,
    unet_config: str | Path | dict,
    resolution: int,
    seed: int = 0,
    prompt: PromptKind = "random",
    prompt_seed: int = 0,
) -> DiffewSModel:
    """A DiffewS model with the trained VAE of `vae_folder` and a UNet initialised from `seed`.

    Args:
        vae_folder: a diffusers ``AutoencoderKL`` folder with safetensors weights (4 latent channels).
        unet_config: a diffusers ``UNet2DConditionModel`` config (dict, or a JSON file).
        resolution: working resolution stored in the model's config.
        seed: seed of the UNet's random initialisation (and of ``conv_in_ref``, copied from ``conv_in``).
        prompt, prompt_seed: the constant prompt embedding, see `constant_prompt_embedding`.

    Raises:
        InputError: a missing or unreadable VAE folder or UNet config, or a config that does not fit.
    """
    vae_folder = user_path(vae_folder)
    if not (vae_folder / "config.json").is_file():
        raise InputError(f"{vae_folder}: not a diffusers autoencoder folder (no config.json)")
    vae = load_component(AutoencoderKL, vae_folder).float()
    config = read_json(user_path(unet_config)) if not isinstance(unet_config, dict) else dict(unet_config)
    source = "the UNet config" if isinstance(unet_config, dict) else str(unet_config)
    if not isinstance(config, dict):
        raise InputError(f"{source}: not a UNet config (a JSON object of settings)")
    for name, value in (("seed", seed), ("prompt seed", prompt_seed)):
        if not 0 <= value < 2**63:
            raise InputError(f"{name} must be in 0..2**63-1, got {value}")
    try:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
        embedding = constant_prompt_embedding(unet.config.cross_attention_dim, prompt, prompt_seed)
        settings = DiffewSConfig(
            resolution=resolution,
            prompt=PROMPT_CONSTANT,
            base_model=f"scratch: vae {vae_folder.name}, unet seed {seed}, {prompt} prompt embedding (seed {prompt_seed})",
        )
        return DiffewSModel.from_components(vae.eval(), unet.eval(), embedding, config=settings).eval()
    except Exception as error:  # any bad value: diffusers raises whatever its arithmetic meets (as build_with_weights)
        raise InputError(f"{source}: cannot build the UNet it describes ({type(error).__name__}: {first_line(error)})") from None
