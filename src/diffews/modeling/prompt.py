"""The constant text conditioning: the text encoder's embedding of the empty prompt.

Two variants, both the authors' (see "Backbone" in the method notes):

- ``"padded"``: the empty prompt padded to the tokenizer's maximum length, ``[BOS, EOS, pad x 75]``,
  (1, 77, D) for SD 2.1. Their training uses it; so do `DiffewSModel.from_stable_diffusion` and
  ``diffews train``.
- ``"authors-eval"``: the empty prompt tokenised without padding, ``[BOS, EOS]``, (1, 2, D). Their
  evaluation uses it, so the paper's numbers come from it; ``diffews convert`` stores it by default.

The UNet's cross-attention attends over every stored token, so the two give different outputs even
though (CLIP's text encoder being causal) the 2 rows equal the first 2 rows of the padded embedding.
A model built from scratch (``diffews init-model``) has no text encoder: its ``"constant"``
embedding is a fixed tensor of any length (`diffews.modeling.scratch`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError, first_line
from .weights import check_safetensors

BOS_TOKEN, EOS_TOKEN, PAD_TOKEN = 49406, 49407, 0
"""CLIP token ids; SD 2.1's tokenizer pads with id 0."""

PROMPT_PADDED, PROMPT_AUTHORS_EVAL, PROMPT_CONSTANT = "padded", "authors-eval", "constant"
TEXT_PROMPTS: tuple[str, ...] = (PROMPT_AUTHORS_EVAL, PROMPT_PADDED)
"""The text encoder's empty-prompt embeddings a conversion can store (``diffews convert --prompt``)."""
PROMPT_MODES: tuple[str, ...] = (*TEXT_PROMPTS, PROMPT_CONSTANT)
"""What ``prompt`` in ``diffews_config.json`` may name."""
UNPADDED_TOKENS = 2
"""Tokens of the unpadded empty prompt: BOS and EOS."""


def empty_prompt_ids(length: int = 77, padded: bool = True) -> torch.Tensor:
    """Token ids of the empty prompt as SD 2.1's tokenizer writes them, without a tokenizer at hand:
    ``[BOS, EOS, 0, ...]`` of shape (1, length) when `padded`, else ``[BOS, EOS]`` (1, 2)."""
    pads = [PAD_TOKEN] * (length - UNPADDED_TOKENS) if padded else []
    return torch.tensor([[BOS_TOKEN, EOS_TOKEN] + pads])


def tokenize_empty_prompt(tokenizer: Any, padded: bool) -> torch.Tensor:
    """Ids ``(1, T)`` of the empty prompt from a CLIP tokenizer: padded to ``tokenizer.model_max_length``
    (T = 77), or unpadded (T = 2), as the authors' training and evaluation call it."""
    padding = "max_length" if padded else "do_not_pad"
    return tokenizer("", padding=padding, truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt").input_ids


@torch.no_grad()
def empty_prompt_embedding(tokenizer: Any | None, text_encoder: nn.Module, padded: bool) -> torch.Tensor:
    """Last hidden state of `text_encoder` for the empty prompt, shape (1, T, D), float32 on the CPU.

    Args:
        tokenizer: a CLIP tokenizer (its ids are used), or None for `empty_prompt_ids` (SD 2.1's).
        text_encoder: a transformers CLIP text model.
        padded: T = the tokenizer's maximum length (77, ``"padded"``) instead of 2 (``"authors-eval"``).
    """
    if tokenizer is not None:
        token_ids = tokenize_empty_prompt(tokenizer, padded)
    else:
        token_ids = empty_prompt_ids(text_encoder.config.max_position_embeddings, padded)
    device = next(text_encoder.parameters()).device
    return text_encoder(token_ids.to(device)).last_hidden_state.float().cpu()


def check_prompt_embedding(embedding: torch.Tensor, prompt: str) -> None:
    """Raise `ValueError` unless `embedding` (1, T, D) fits the `prompt` variant that names it."""
    if embedding.ndim != 3 or embedding.shape[0] != 1 or 0 in embedding.shape:
        raise ValueError(f"prompt embedding must have shape (1, T, D) with T, D >= 1, got {tuple(embedding.shape)}")
    tokens = embedding.shape[1]
    if prompt != PROMPT_CONSTANT and (prompt == PROMPT_AUTHORS_EVAL) != (tokens == UNPADDED_TOKENS):
        raise ValueError(f"prompt embedding has {tokens} tokens, which does not fit prompt {prompt!r}")


def describe_prompt(prompt: str, tokens: int) -> str:
    """One phrase for model cards and logs, e.g. "authors-eval (2 tokens: the empty prompt unpadded, ...)"."""
    how = {
        PROMPT_AUTHORS_EVAL: "the empty prompt unpadded, as the authors evaluated",
        PROMPT_PADDED: "the empty prompt padded, as the authors trained",
        PROMPT_CONSTANT: "a fixed tensor, no text encoder",
    }[prompt]
    return f"{prompt} ({tokens} tokens: {how})"


def base_prompt_embedding(root: Path, width: int, padded: bool = True) -> torch.Tensor:
    """Empty-prompt embedding of a Stable Diffusion folder's ``text_encoder/`` (safetensors), (1, T, D);
    see `empty_prompt_embedding`.

    Uses the folder's ``tokenizer/`` when present, else `empty_prompt_ids`. The text encoder is
    loaded for this one call and freed.

    Raises:
        InputError: naming `root`, when D is not `width` (the UNet's cross-attention width).
    """
    from transformers import CLIPTextModel, CLIPTokenizer

    check_safetensors(root / "text_encoder")
    try:
        text_encoder = CLIPTextModel.from_pretrained(root / "text_encoder", use_safetensors=True)
        tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer") if (root / "tokenizer").is_dir() else None
    except (OSError, ValueError, TypeError, RuntimeError) as error:  # a damaged config, weights of another model
        raise InputError(f"{root}: cannot load its text encoder or tokenizer ({first_line(error)})") from None
    embedding = empty_prompt_embedding(tokenizer, text_encoder, padded)
    if embedding.shape[-1] != width:
        raise InputError(
            f"{root}: text encoder width {embedding.shape[-1]} does not match the UNet's cross-attention "
            f"width {width}; is this the base the UNet was trained from?"
        )
    return embedding
