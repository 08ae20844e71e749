"""Test-only builders, not public API: tiny random-weight models with Stable Diffusion 2.1's structure.

Same block types, depth, attention layout (linear projections, ``upcast_attention``) and VAE
downsampling factor (8) as SD 2.1, with widths small enough to run on a CPU in milliseconds.
The weights are random: outputs exercise the machinery and are not segmentations. Users reach the
tiny model by its registered name, ``tiny-random`` (`diffews.registry`), which checks an installation.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from .modeling.config import DiffewSConfig
from .modeling.diffews_model import DiffewSModel
from .modeling.oi2m import oi2m_scheduler
from .modeling.prompt import empty_prompt_embedding
from .modeling.sd21 import SD21_UNET_CONFIG, SD21_VAE_CONFIG

TINY_RESOLUTION = 64
TINY_TEXT_WIDTH = 32

TINY_VAE_CONFIG = {
    **SD21_VAE_CONFIG,
    "block_out_channels": (8, 16, 16, 16),
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "sample_size": TINY_RESOLUTION,
}
"""SD 2.1's VAE (`diffews.modeling.sd21`) with tiny widths: same blocks and downsampling factor 8."""

TINY_UNET_CONFIG = {
    **SD21_UNET_CONFIG,
    "sample_size": TINY_RESOLUTION // 8,
    "block_out_channels": (16, 16, 32, 32),
    "layers_per_block": 1,
    "attention_head_dim": (2, 2, 4, 4),
    "cross_attention_dim": TINY_TEXT_WIDTH,
    "norm_num_groups": 4,
}
"""SD 2.1's UNet with tiny widths: same blocks, attention layout (linear projections, upcast attention)."""

TINY_TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=TINY_TEXT_WIDTH,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=77,
    projection_dim=TINY_TEXT_WIDTH,
    hidden_act="gelu",
)


def tiny_stable_diffusion(seed: int = 0) -> tuple[AutoencoderKL, UNet2DConditionModel, torch.nn.Module]:
    """Random tiny (VAE, UNet, CLIP text encoder) with SD 2.1's structure."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    vae = AutoencoderKL(**TINY_VAE_CONFIG)
    unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT_CONFIG))
    return vae.eval(), unet.eval(), text_encoder.eval()


def tiny_clip_tokenizer():
    """A CLIP tokenizer built offline: printable ASCII symbols (``"!"`` first, id 0), the same with
    ``</w>``, then BOS (188) and EOS (189); no merges; pads with ``"!"`` to 77 tokens, as SD 2.1's does.
    Its BOS/EOS ids differ from SD's on purpose, so tests see whether a tokenizer's ids are used."""
    from transformers import CLIPTokenizer

    symbols = [chr(code) for code in range(33, 127)]
    vocab = symbols + [symbol + "</w>" for symbol in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(vocab)}, merges=[], pad_token="!", model_max_length=77)


def save_tiny_stable_diffusion(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny SD-2.1-layout diffusers folder (``vae/``, ``unet/``, ``text_encoder/``,
    ``tokenizer/``, ``scheduler/``)."""
    root = Path(path)
    vae, unet, text_encoder = tiny_stable_diffusion(seed)
    vae.save_pretrained(root / "vae", safe_serialization=True)
    unet.save_pretrained(root / "unet", safe_serialization=True)
    text_encoder.save_pretrained(root / "text_encoder", safe_serialization=True)
    tiny_clip_tokenizer().save_pretrained(root / "tokenizer")
    oi2m_scheduler().save_pretrained(root / "scheduler")
    return root


def build_tiny_model(seed: int = 0, resolution: int = TINY_RESOLUTION) -> DiffewSModel:
    """A random-weight DiffewS model with SD 2.1's structure and tiny widths, built offline.

    Its masks are meaningless: use it to test the machinery, never as a segmenter.
    """
    vae, unet, text_encoder = tiny_stable_diffusion(seed)
    config = DiffewSConfig(resolution=resolution, base_model=f"tiny-random (seed {seed})")
    return DiffewSModel.from_components(vae, unet, empty_prompt_embedding(None, text_encoder, padded=True), config=config).eval()
