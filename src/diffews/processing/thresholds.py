"""Decoded mask images -> probabilities and binary masks at each query's size, by one of three rules.

A *mask image* is what generation decodes: ``(N, C, R, R)`` in [0, 1], white foreground on black,
C = 3 from the VAE (C = 1 from a distilled mask decoder, read as a grey image).

- ``"relative"``: probability = channel mean, resized bilinearly to the query's size; foreground
  where p > threshold x max p of that query.
- ``"absolute"``: the same probability; foreground where p > threshold.
- ``"authors"``: the authors' evaluation, exactly: the image x 255, resized to the query's size
  with nearest neighbour (when it differs), converted to 8 bits by truncation; foreground where the
  channel mean > threshold x the largest single channel value of that image. The probability is the
  8-bit channel mean / 255.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

THRESHOLD_MODES: tuple[str, ...] = ("relative", "absolute", "authors")
"""Binarisation rules, see the module docstring."""


def check_threshold(threshold: float, mode: str) -> None:
    """Raise `ValueError` unless `mode` is known and `threshold` lies in [0, 1]."""
    if mode not in THRESHOLD_MODES:
        raise ValueError(f"threshold mode must be one of {', '.join(THRESHOLD_MODES)}, got {mode!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")


def channel_mean(mask_images: torch.Tensor) -> torch.Tensor:
    """Probabilities ``(N, 1, H, W)`` of mask images ``(N, C, H, W)`` in [0, 1]: the mean over channels."""
    return mask_images.mean(dim=1, keepdim=True)


def binarize(probabilities: torch.Tensor, threshold: float, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Threshold probability maps ``(N, ...)``; returns (masks, absolute thresholds ``(N,)``).

    ``"relative"``: foreground where p > threshold * max(p) of that map; ``"absolute"``: p > threshold.
    (``"authors"`` needs the channels: see `authors_binarize`.)
    """
    if mode not in ("relative", "absolute"):
        raise ValueError(f"binarize thresholds probabilities by 'relative' or 'absolute', got {mode!r}")
    flat = probabilities.flatten(1)
    if mode == "relative":
        cut = threshold * flat.amax(dim=1)
    else:
        cut = torch.full((flat.shape[0],), threshold, dtype=flat.dtype, device=flat.device)
    masks = probabilities > cut.view(-1, *([1] * (probabilities.ndim - 1)))
    return masks, cut


def to_eight_bit(mask_images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Mask images ``(N, C, H, W)`` in [0, 1] -> uint8 ``(N, C, *size)``: x 255, nearest resize to
    `size` when it differs, truncation to 8 bits (the authors' order of operations)."""
    scaled = mask_images.float() * 255
    if size is not None and tuple(scaled.shape[-2:]) != tuple(size):
        scaled = F.interpolate(scaled, size=size, mode="nearest")
    return scaled.to(torch.uint8)


def authors_binarize(eight_bit: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The authors' rule on 8-bit mask images ``(N, C, H, W)`` uint8.

    Returns masks ``(N, H, W)`` bool (channel mean > threshold x the image's largest channel value),
    probabilities ``(N, H, W)`` float32 (the channel mean / 255) and the thresholds ``(N,)`` applied to them.
    Computed in float64 with the channels summed in order, as numpy computes their rule.
    """
    values = eight_bit.double() / 255
    total = values[:, 0]
    for channel in range(1, values.shape[1]):
        total = total + values[:, channel]
    mean = total / values.shape[1]
    cut = threshold * values.flatten(1).amax(dim=1)
    return mean > cut.view(-1, 1, 1), mean.float(), cut.float()


def threshold_mask_images(
    mask_images: torch.Tensor, threshold: float, mode: str, size: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask images ``(N, C, H, W)`` in [0, 1] -> masks ``(N, *size)`` bool, probabilities ``(N, *size)``
    float32 and thresholds ``(N,)``, by `mode` (see the module docstring); `size` defaults to (H, W)."""
    check_threshold(threshold, mode)
    images = mask_images.float()
    size = tuple(size) if size is not None else tuple(images.shape[-2:])
    if mode == "authors":
        return authors_binarize(to_eight_bit(images, size), threshold)
    probabilities = channel_mean(images)
    if size != tuple(images.shape[-2:]):
        probabilities = F.interpolate(probabilities, size=size, mode="bilinear", align_corners=False)
    probabilities = probabilities[:, 0].clamp(0, 1)
    masks, cuts = binarize(probabilities, threshold, mode)
    return masks, probabilities, cuts


def masks_at_sizes(
    mask_images: torch.Tensor, sizes: list[tuple[int, int]], threshold: float, mode: str
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Mask images ``(B, C, R, R)`` in [0, 1] -> per query ``(mask (H, W) bool, probability (H, W)
    float32, threshold)`` at its size ``sizes[i]``, by `mode` (see `threshold_mask_images`).

    Queries of one size are resized and binarised as one batch, on the images' device.
    """
    results: list[tuple[np.ndarray, np.ndarray, float]] = [None] * len(sizes)  # type: ignore[list-item]
    for size in dict.fromkeys(sizes):
        indices = [i for i, s in enumerate(sizes) if s == size]
        masks, probabilities, cuts = threshold_mask_images(mask_images[indices], threshold, mode, size)
        for i, mask, probability, cut in zip(indices, masks.cpu().numpy(), probabilities.cpu().numpy(), cuts.tolist()):
            results[i] = (mask, probability, cut)
    return results
