"""Pictures of results: a mask, or a label map with its legend, drawn over its image."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from .labels import class_colors

OVERLAY_COLOR = (255, 40, 40)


def overlay_mask(image: Image.Image, mask: np.ndarray, color: tuple[int, int, int] = OVERLAY_COLOR, alpha: float = 0.5) -> Image.Image:
    """`image` (shown upright: its EXIF orientation applied, as the pipeline reads it; the mask's size)
    with foreground pixels tinted by `color` at opacity `alpha`."""
    pixels = _upright_pixels(image, mask.shape, "mask")
    tinted = np.where(mask[..., None], (1 - alpha) * pixels + alpha * np.asarray(color, np.float32), pixels)
    return Image.fromarray(tinted.round().astype(np.uint8))


def mask_image(mask: np.ndarray) -> Image.Image:
    """Binary mask as an 8-bit PNG-ready image: 255 foreground, 0 background."""
    return Image.fromarray(mask.astype(np.uint8) * 255, mode="L")


def overlay_labels(image: Image.Image, labels: np.ndarray, names: list[str], alpha: float = 0.5) -> Image.Image:
    """`image` with each class's pixels tinted by its colour (`class_colors`), and a legend strip
    below it: one colour swatch and name per class, in label order."""
    pixels = _upright_pixels(image, labels.shape, "label map")
    colors = np.asarray([(0, 0, 0), *class_colors(len(names))], dtype=np.float32)
    tinted = np.where((labels > 0)[..., None], (1 - alpha) * pixels + alpha * colors[labels], pixels)
    picture = Image.fromarray(tinted.round().astype(np.uint8))
    return _with_legend(picture, names, class_colors(len(names)))


def _upright_pixels(image: Image.Image, shape: tuple[int, ...], what: str) -> np.ndarray:
    """`image` upright (EXIF orientation applied) as float RGB pixels; `ValueError` unless its height
    and width are `shape`, the (H, W) of the `what` drawn over it."""
    pixels = np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.float32)
    if pixels.shape[:2] != tuple(shape):
        height, width = pixels.shape[:2]
        raise ValueError(f"{what} of {shape[1]}x{shape[0]} (width x height) does not match the image's {width}x{height}")
    return pixels


_LEGEND_ROW = 14


def _with_legend(picture: Image.Image, names: list[str], colors: list[tuple[int, int, int]]) -> Image.Image:
    """`picture` above a white strip listing `names`, each behind a swatch of its colour; the strip
    wraps entries to the picture's width (at least 160 pixels wide)."""
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(picture)
    width = max(picture.width, 160)
    entries, x, row = [], 4, 0
    for name, color in zip(names, colors):
        size = 14 + int(draw.textlength(name, font=font)) + 10
        if x + size > width and x > 4:
            x, row = 4, row + 1
        entries.append((x, row, name, color))
        x += size
    legend = Image.new("RGB", (width, picture.height + (row + 1) * _LEGEND_ROW + 4), "white")
    legend.paste(picture, (0, 0))
    draw = ImageDraw.Draw(legend)
    for x, row, name, color in entries:
        top = picture.height + 2 + row * _LEGEND_ROW
        draw.rectangle([x, top + 2, x + 9, top + 11], fill=color, outline=(0, 0, 0))
        draw.text((x + 13, top), name, fill=(0, 0, 0), font=font)
    return legend
