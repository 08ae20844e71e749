"""Pictures of results: a mask drawn over its image."""

from __future__ import annotations

import numpy as np
from PIL import Image

OVERLAY_COLOR = (255, 40, 40)


def overlay_mask(image: Image.Image, mask: np.ndarray, color: tuple[int, int, int] = OVERLAY_COLOR, alpha: float = 0.5) -> Image.Image:
    """`image` (RGB, the mask's size) with foreground pixels tinted by `color` at opacity `alpha`."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    if pixels.shape[:2] != mask.shape:
        raise ValueError(f"mask shape {mask.shape} does not match image size {pixels.shape[1::-1]}")
    tinted = np.where(mask[..., None], (1 - alpha) * pixels + alpha * np.asarray(color, np.float32), pixels)
    return Image.fromarray(tinted.round().astype(np.uint8))


def mask_image(mask: np.ndarray) -> Image.Image:
    """Binary mask as an 8-bit PNG-ready image: 255 foreground, 0 background."""
    return Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
