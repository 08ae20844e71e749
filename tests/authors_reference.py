"""An independent statement of the authors' evaluation path, written from the method notes
(../shared/METHOD.md: "Backbone", "KV-fusion self-attention", "Generation", "Evaluation protocol").

The evaluation path calls nothing of diffews: diffusers' stock UNet and VAE, transformers'
tokenizer and text encoder, PIL and numpy only (checkpoints in the authors' layout come from
`authors_fixtures`). Tests compare diffews against it end to end, from files
or PIL images to binary masks, so a difference anywhere on the way (tokenisation, resizing, the two
passes, decoding, 8-bit truncation, thresholding) shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextModel, CLIPTokenizer


class BankingAttention:
    """Self-attention that banks K/V while writing and attends over [own, banked...] while reading,
    in plain torch (softmax(QK^T / sqrt(d)) V per head)."""

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


class AuthorsReference:
    """The authors' model from their ``unet/`` layout (config + weights with ``conv_in_ref``) and a base
    SD folder (``vae/``, ``text_encoder/``, ``tokenizer/``), run as their evaluation runs it."""

    def __init__(self, base: Path, unet_config: dict, unet_state: dict[str, torch.Tensor], padded_prompt: bool = False) -> None:
        self.vae = AutoencoderKL.from_pretrained(base / "vae").eval()
        tokenizer = CLIPTokenizer.from_pretrained(base / "tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(base / "text_encoder").eval()
        padding = "max_length" if padded_prompt else "do_not_pad"
        ids = tokenizer("", padding=padding, truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
        with torch.no_grad():
            self.text = text_encoder(ids).last_hidden_state

        config = {k: v for k, v in unet_config.items() if not k.startswith("_") and k != "in_channels_ref"}
        self.unet = UNet2DConditionModel.from_config(config).eval()
        state = dict(unet_state)
        ref_weight, ref_bias = state.pop("conv_in_ref.weight"), state.pop("conv_in_ref.bias")
        self.unet.load_state_dict(state)
        self.conv_in = self.unet.conv_in
        self.conv_in_ref = torch.nn.Conv2d(ref_weight.shape[1], self.conv_in.out_channels, 3, padding=1)
        with torch.no_grad():
            self.conv_in_ref.weight.copy_(ref_weight)
            self.conv_in_ref.bias.copy_(ref_bias)

    def latent(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images).latent_dist.mean * self.vae.config.scaling_factor

    @torch.no_grad()
    def mask_latents(self, support_images: torch.Tensor, support_masks: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Per-shot support passes through conv_in_ref banking K/V in every attn1, then one query pass
        through conv_in reading them; mask latent = -v (alpha_bar = 0). Images ``(N, 3, R, R)`` in
        [-1, 1], masks ``(K, 1, R, R)`` in {0, 1}; returns ``(B, 4, R/8, R/8)``."""
        mode = {"write": True}
        processors = {
            name: BankingAttention([], mode) if name.endswith("attn1.processor") else processor
            for name, processor in self.unet.attn_processors.items()
        }
        self.unet.set_attn_processor(processors)
        self.unet.conv_in = self.conv_in_ref
        for image, mask in zip(support_images, support_masks):
            mask_image = (mask * 2 - 1).expand(3, -1, -1)
            sample = torch.cat([self.latent(image[None]), self.latent(mask_image[None])], dim=1)
            self.unet(sample, 1, encoder_hidden_states=self.text)
        self.unet.conv_in = self.conv_in
        mode["write"] = False
        velocity = self.unet(self.latent(queries), 1, encoder_hidden_states=self.text.expand(len(queries), -1, -1)).sample
        return -velocity

    @torch.no_grad()
    def segment(
        self, support_images: list[Image.Image], support_masks: list[np.ndarray], queries: list[Image.Image],
        resolution: int, sizes: list[tuple[int, int]] | None = None, threshold: float = 0.25,
    ) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """Their evaluation from PIL images and bool masks: (mask, 8-bit probability, threshold) per
        query, at `sizes` (default: each query's own size)."""
        images = torch.stack([preprocess_image(image, resolution) for image in support_images])
        masks = torch.stack([preprocess_mask(mask, resolution) for mask in support_masks])
        results = []
        for index, query in enumerate(queries):
            latents = self.mask_latents(images, masks, preprocess_image(query, resolution)[None])
            decoded = self.vae.decode(latents / self.vae.config.scaling_factor).sample
            image = (decoded.clamp(-1, 1) * 0.5 + 0.5)[0].permute(1, 2, 0).numpy()
            size = sizes[index] if sizes is not None else (query.height, query.width)
            mask, probability, cut = binarize_like_the_authors(image[None], size, threshold)
            results.append((mask[0], probability[0], float(cut[0])))
        return results


def preprocess_image(image: Image.Image, resolution: int) -> torch.Tensor:
    """The 8-bit image resized with PIL's bilinear filter (torchvision's Resize on a PIL image),
    ToTensor (/ 255), normalised with mean 0.5 and std 0.5: ``(3, R, R)`` in [-1, 1]."""
    resized = np.asarray(image.convert("RGB").resize((resolution, resolution), Image.BILINEAR))
    tensor = torch.from_numpy(resized.copy()).permute(2, 0, 1).float().div(255)
    return (tensor - 0.5) / 0.5


def preprocess_mask(mask: np.ndarray, resolution: int) -> torch.Tensor:
    """Bool mask resized with ``F.interpolate(mode="nearest")``: ``(1, R, R)`` in {0, 1}."""
    return F.interpolate(torch.from_numpy(mask).float()[None, None], size=(resolution, resolution), mode="nearest")[0]


def binarize_like_the_authors(images: np.ndarray, size: tuple[int, int], threshold: float):
    """The rule as the method notes state it, in numpy: mask images ``(N, H, W, C)`` float32 in [0, 1]
    -> masks ``(N, *size)``, probabilities (8-bit channel means / 255) and thresholds ``(N,)``.

    x 255, nearest resize to `size` when it differs (source index floor(i x in / out)), truncation
    to uint8, / 255; foreground where the channel mean > threshold x the largest channel value.
    """
    scaled = images * 255
    if tuple(size) != scaled.shape[1:3]:
        rows = np.floor(np.arange(size[0]) * scaled.shape[1] / size[0]).astype(int)
        cols = np.floor(np.arange(size[1]) * scaled.shape[2] / size[1]).astype(int)
        scaled = scaled[:, rows][:, :, cols]
    values = scaled.astype(np.uint8) / 255.0
    mean = values.mean(axis=-1)
    cuts = threshold * values.reshape(len(values), -1).max(axis=1)
    return mean > cuts[:, None, None], mean, cuts
