"""The constant text conditioning: the text encoder's embedding of the empty prompt."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from .weights import check_safetensors

BOS_TOKEN, EOS_TOKEN, PAD_TOKEN = 49406, 49407, 0
"""CLIP token ids; SD 2.1's tokenizer pads with id 0."""


def empty_prompt_ids(length: int = 77) -> torch.Tensor:
    """Token ids of the empty prompt as SD 2.1's tokenizer writes them: ``[BOS, EOS, 0, ...]``, shape (1, length)."""
    return torch.tensor([[BOS_TOKEN, EOS_TOKEN] + [PAD_TOKEN] * (length - 2)])


@torch.no_grad()
def encode_empty_prompt(text_encoder: nn.Module, token_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Last hidden state of `text_encoder` for the empty prompt, shape (1, 77, D), float32.

    `token_ids` defaults to `empty_prompt_ids`; pass the base model's own tokenizer output to
    follow a tokenizer that pads differently.
    """
    if token_ids is None:
        token_ids = empty_prompt_ids(text_encoder.config.max_position_embeddings)
    device = next(text_encoder.parameters()).device
    return text_encoder(token_ids.to(device)).last_hidden_state.float().cpu()


def base_prompt_embedding(root: Path, width: int) -> torch.Tensor:
    """Empty-prompt embedding of a Stable Diffusion folder's ``text_encoder/`` (safetensors), shape (1, 77, D).

    Uses the folder's ``tokenizer/`` when present, else `empty_prompt_ids`. The text encoder is
    loaded for this one call and freed.

    Raises:
        InputError: naming `root`, when D is not `width` (the UNet's cross-attention width).
    """
    from transformers import CLIPTextModel, CLIPTokenizer

    check_safetensors(root / "text_encoder")
    text_encoder = CLIPTextModel.from_pretrained(root / "text_encoder", use_safetensors=True)
    token_ids = None
    if (root / "tokenizer").is_dir():
        tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer")
        token_ids = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    embedding = encode_empty_prompt(text_encoder, token_ids)
    if embedding.shape[-1] != width:
        raise InputError(
            f"{root}: text encoder width {embedding.shape[-1]} does not match the UNet's cross-attention "
            f"width {width}; is this the base the UNet was trained from?"
        )
    return embedding
