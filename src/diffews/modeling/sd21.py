"""Stable Diffusion 2.1's VAE and UNet architectures as data, for random-weight builds.

Computation cost does not depend on weight values, so benchmarks build the full SD 2.1 (768,
v-prediction) architecture from these configs with random weights instead of downloading it.
The values are those of the released ``unet/config.json`` and ``vae/config.json``.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from .config import DiffewSConfig
from .diffews_model import DiffewSModel

SD21_RESOLUTION = 512
SD21_TEXT_WIDTH = 1024
SD21_TEXT_TOKENS = 77

SD21_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=768,
    scaling_factor=0.18215,
)

SD21_UNET_CONFIG = dict(
    sample_size=96,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=SD21_TEXT_WIDTH,
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
    upcast_attention=True,
    dual_cross_attention=False,
)


def build_sd21_model(seed: int = 0, device: torch.device | str | None = None) -> DiffewSModel:
    """A random-weight DiffewS model with the full SD 2.1 VAE and UNet (for cost measurements only).

    The empty-prompt embedding is random too, shape ``(1, 77, 1024)``. Weights are created on
    `device` directly (about 3.8 GB in float32).
    """
    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        vae = AutoencoderKL(**SD21_VAE_CONFIG)
        unet = UNet2DConditionModel(**SD21_UNET_CONFIG)
        prompt = torch.randn(1, SD21_TEXT_TOKENS, SD21_TEXT_WIDTH)
    config = DiffewSConfig(resolution=SD21_RESOLUTION, base_model=f"sd21-random (seed {seed})")
    return DiffewSModel.from_components(vae.eval(), unet.eval(), prompt, config=config).eval()
