"""Pasting cut-out objects onto a background: the image and which object each pixel shows.

Pure array functions (numpy, no per-pixel loops). An object's pixel is *visible* where its alpha is
at least `OPAQUE` and no later-pasted object is that opaque there; masks of a class are the union
of its objects' visible pixels, so occlusion by a distractor removes exactly what it covers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

OPAQUE = 128
"""Alpha (0-255) from which a pixel belongs to an object's mask."""


def fit_longer_side(image: Image.Image, size: int, resample: Image.Resampling = Image.LANCZOS) -> Image.Image:
    """`image` resized (aspect kept, by `resample`) so that its longer side is `size` pixels."""
    if max(image.size) == size:
        return image
    scale = size / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)


def transform_cutout(cutout: Image.Image, size: int, angle: float) -> np.ndarray:
    """An RGBA cut-out scaled so its longer side is `size` px, rotated by `angle` degrees counter-clockwise.

    Returns ``(h, w, 4)`` uint8 RGBA; rotation enlarges the canvas to hold the whole object
    (new corners transparent). Colour is premultiplied during resampling, so transparent pixels'
    colours never bleed into the edges.
    """
    image = fit_longer_side(cutout.convert("RGBa"), size)
    if angle:
        image = image.rotate(angle, resample=Image.BICUBIC, expand=True)
    return np.asarray(image.convert("RGBA"))


@dataclass(frozen=True)
class Pasted:
    """An object to paste: ``(h, w, 4)`` uint8 RGBA pixels, top-left corner (may lie outside the canvas)."""

    pixels: np.ndarray
    top: int
    left: int


def paste_all(background: np.ndarray, objects: Sequence[Pasted]) -> tuple[np.ndarray, np.ndarray]:
    """Alpha-composite `objects` in order over `background`.

    Args:
        background: ``(H, W, 3)`` uint8.
        objects: pasted first to last (later ones cover earlier ones).

    Returns:
        image ``(H, W, 3)`` uint8, and owner ``(H, W)`` int32: 1 + the index of the object visible at
        each pixel (last one pasted with alpha >= `OPAQUE` there), 0 where none is.
    """
    canvas = background.astype(np.float32)
    owner = np.zeros(background.shape[:2], dtype=np.int32)
    height, width = owner.shape
    for index, item in enumerate(objects):
        h, w = item.pixels.shape[:2]
        top, left = max(item.top, 0), max(item.left, 0)
        bottom, right = min(item.top + h, height), min(item.left + w, width)
        if top >= bottom or left >= right:
            continue
        pixels = item.pixels[top - item.top : bottom - item.top, left - item.left : right - item.left]
        alpha = pixels[..., 3:].astype(np.float32) / 255.0
        region = canvas[top:bottom, left:right]
        region *= 1.0 - alpha
        region += alpha * pixels[..., :3]
        owner[top:bottom, left:right][pixels[..., 3] >= OPAQUE] = index + 1
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), owner


def visible_fraction(owner: np.ndarray, objects: Sequence[Pasted], index: int) -> float:
    """Share of object `index`'s opaque pixels (inside the canvas or not) that stay visible in `owner`."""
    opaque = int((objects[index].pixels[..., 3] >= OPAQUE).sum())
    return float((owner == index + 1).sum()) / opaque if opaque else 0.0
