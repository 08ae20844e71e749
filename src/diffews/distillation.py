"""Distilling a small `MaskDecoder` from a DiffewS model's VAE decoder, on generated masks.

Training pairs need no dataset: random masks (unions of ellipses and rectangles) are encoded with
the model's VAE; the inputs are those latents, perturbed with Gaussian noise so the student also
sees latents off the clean-mask manifold (as the UNet's predictions are), and the targets are the
full VAE decoder's probabilities for the same latents.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .modeling import DiffewSModel
from .modeling.mask_decoder import MaskDecoder, MaskDecoderConfig
from .processing.thresholds import channel_mean, threshold_mask_images
from .signals import until_stopped


def random_masks(count: int, size: int, generator: torch.Generator, max_shapes: int = 4) -> torch.Tensor:
    """Binary masks ``(count, 1, size, size)`` in {0, 1}: each the union of 1..`max_shapes` random
    axis-aligned ellipses and rectangles (CPU, reproducible from `generator`)."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = coords.view(1, 1, size, 1), coords.view(1, 1, 1, size)
    shape = (count, max_shapes, 1, 1)
    centre_y, centre_x = torch.rand(shape, generator=generator), torch.rand(shape, generator=generator)
    radius_y = 0.05 + 0.3 * torch.rand(shape, generator=generator)
    radius_x = 0.05 + 0.3 * torch.rand(shape, generator=generator)
    dy, dx = (y - centre_y) / radius_y, (x - centre_x) / radius_x
    ellipse = dy**2 + dx**2 <= 1
    rectangle = (dy.abs() <= 1) & (dx.abs() <= 1)
    is_ellipse = torch.rand(shape, generator=generator) < 0.5
    shapes = torch.where(is_ellipse, ellipse, rectangle)
    used = torch.arange(max_shapes).view(1, -1, 1, 1) < torch.randint(1, max_shapes + 1, (count, 1, 1, 1), generator=generator)
    return (shapes & used).any(dim=1, keepdim=True).float()


@torch.no_grad()
def teacher_pairs(
    model: DiffewSModel, masks: torch.Tensor, generator: torch.Generator, latent_noise: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask latents ``(N, 4, h, w)``, full-decoder mask images ``(N, 3, H, W)`` in [0, 1]) for binary `masks`.

    `latent_noise` is the standard deviation of the added noise relative to the latents' own.
    """
    latents = model.encode_masks(masks.to(model.device)).float()
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    latents = latents + latent_noise * latents.std() * noise
    return latents, model.decode_mask_images(latents)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU per mask of two bool batches ``(N, ...)``; 1 where both are empty."""
    intersection = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


def distill_mask_decoder(
    model: DiffewSModel,
    config: MaskDecoderConfig | None = None,
    steps: int = 2000,
    batch_size: int = 8,
    resolution: int | None = None,
    learning_rate: float = 1e-3,
    latent_noise: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> MaskDecoder:
    """Train a `MaskDecoder` to reproduce `model`'s VAE decoder on generated masks.

    Loss: binary cross-entropy between the student's logits and the teacher's probabilities;
    AdamW with cosine decay. The student trains in float32 on the model's device.
    """
    resolution = resolution or model.config.resolution
    vae = model.vae.config
    config = config or MaskDecoderConfig(latent_channels=vae.latent_channels, scaling_factor=vae.scaling_factor)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    decoder = MaskDecoder(config).to(model.device).train()
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    bar = tqdm(range(steps), desc="distilling", unit="step", disable=not progress)
    for _ in until_stopped(bar):
        latents, targets = teacher_pairs(model, random_masks(batch_size, resolution, generator), generator, latent_noise)
        loss = F.binary_cross_entropy_with_logits(decoder.logits(latents).float(), channel_mean(targets))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    return decoder.eval()


@torch.no_grad()
def evaluate_mask_decoder(
    model: DiffewSModel,
    decoder: MaskDecoder,
    count: int = 64,
    resolution: int | None = None,
    latent_noise: float = 0.1,
    seed: int = 1,
) -> dict[str, float]:
    """Agreement of the distilled decoder with the full VAE decoder on `count` held-out generated
    masks: mean and minimum IoU of their masks (both binarised with the model's default threshold)
    and the mean absolute difference of their probabilities."""
    resolution = resolution or model.config.resolution
    generator = torch.Generator().manual_seed(seed)
    latents, teacher = teacher_pairs(model, random_masks(count, resolution, generator), generator, latent_noise)
    student = decoder(latents)
    threshold, mode = model.config.threshold, model.config.threshold_mode
    iou = mask_iou(threshold_mask_images(student, threshold, mode)[0], threshold_mask_images(teacher, threshold, mode)[0])
    return {
        "iou_vs_vae_decoder": float(iou.mean()),
        "min_iou_vs_vae_decoder": float(iou.min()),
        "mean_abs_probability_error": float((student - channel_mean(teacher)).abs().mean()),
        "eval_masks": count,
    }
