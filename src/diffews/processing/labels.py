"""Label maps: several classes in one (H, W) map, 0 = background, i = the i-th class.

The rule that makes a label map from per-class results: a pixel takes the class with the highest
probability among the classes whose own mask (own threshold) covers it; a pixel no mask covers
is background. Ties go to the class listed first.
"""

from __future__ import annotations

import colorsys
import re

import numpy as np
from PIL import Image

from ..errors import InputError
from .masks import IGNORE_INDEX

MAX_CLASSES = IGNORE_INDEX - 1
"""Classes one label map holds: indices 1..254 (0 is background, 255 marks ignored pixels)."""

_FORBIDDEN_NAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


def label_map(probabilities: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Label map ``(H, W)`` uint8 from per-class probabilities ``(C, H, W)`` and masks ``(C, H, W)`` bool."""
    if probabilities.shape[0] > MAX_CLASSES:
        raise ValueError(f"a label map holds at most {MAX_CLASSES} classes, got {probabilities.shape[0]}")
    if probabilities.shape[0] == 0:
        return np.zeros(probabilities.shape[1:], dtype=np.uint8)
    best = np.where(masks, probabilities, -np.inf).argmax(axis=0)
    return np.where(masks.any(axis=0), best + 1, 0).astype(np.uint8)


def check_class_names(names: list[str], source: str) -> None:
    """`InputError` naming `source` unless the names are 1..MAX_CLASSES distinct valid file-name parts.

    A valid name is non-empty, at most 100 characters, not ``.`` or ``..``, without surrounding
    spaces, path separators, control characters or ``:*?"<>|`` (names become parts of file names
    and COCO category names).
    """
    if not names:
        raise InputError(f"{source}: no classes given")
    if len(names) > MAX_CLASSES:
        raise InputError(f"{source}: {len(names)} classes, at most {MAX_CLASSES} fit in a label map")
    for name in names:
        if not isinstance(name, str):
            raise InputError(f"{source}: class name {name!r} is not a string")
        if not name or name in (".", "..") or name != name.strip() or len(name) > 100 or _FORBIDDEN_NAME.search(name):
            raise InputError(f"{source}: class name {name!r} is not a valid file-name part")
    seen: dict[str, str] = {}
    for name in names:
        if name.casefold() in seen:
            raise InputError(f"{source}: class {name!r} is given twice (as {seen[name.casefold()]!r} and {name!r})")
        seen[name.casefold()] = name


def class_colors(count: int) -> list[tuple[int, int, int]]:
    """`count` distinct saturated RGB colours, class i+1 -> colour i (hues spread by the golden ratio)."""
    colors = []
    for i in range(count):
        r, g, b = colorsys.hsv_to_rgb((0.0 + i * 0.618033988749895) % 1.0, 0.85, 0.95)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return colors


def label_image(labels: np.ndarray, num_classes: int) -> Image.Image:
    """Label map ``(H, W)`` uint8 as a palette image: index = label, 0 black, class i its colour."""
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    palette = [(0, 0, 0), *class_colors(num_classes)]
    image.putpalette([v for color in palette for v in color])
    return image


def read_label_image(image: Image.Image, source: str) -> np.ndarray:
    """Integer labels ``(H, W)`` uint8 from a palette (the index) or grayscale (the value) image.

    Raises:
        InputError: other modes (colour label images are ambiguous), naming `source`.
    """
    if image.mode not in ("P", "L", "I", "I;16"):
        raise InputError(f"{source}: a label image must be a palette or grayscale PNG (label = index or value), got mode {image.mode}")
    labels = np.asarray(image)
    if labels.size and (labels.min() < 0 or labels.max() > IGNORE_INDEX):
        raise InputError(f"{source}: labels must be in 0..{IGNORE_INDEX}, found {labels.min()}..{labels.max()}")
    return labels.astype(np.uint8)


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of a ``(H, W)`` bool mask: (labels ``(H, W)`` int32, 0 = background,
    1..N in raster order of each component's first pixel; N).

    Vectorised label propagation: every pixel repeatedly takes the smallest label among itself and
    its neighbours, and labels jump to their label's label, until nothing changes.
    """
    height, width = mask.shape
    inf = height * width
    labels = np.where(mask, np.arange(inf).reshape(height, width), inf)
    flat_mask = mask.ravel()
    while True:
        smallest = labels.copy()
        np.minimum(smallest[1:], labels[:-1], out=smallest[1:])
        np.minimum(smallest[:-1], labels[1:], out=smallest[:-1])
        np.minimum(smallest[:, 1:], labels[:, :-1], out=smallest[:, 1:])
        np.minimum(smallest[:, :-1], labels[:, 1:], out=smallest[:, :-1])
        smallest = np.where(mask, smallest, inf)
        jumped = smallest.ravel()
        inside = jumped[flat_mask]
        for _ in range(2):  # pointer jumping: a label adopts the label its root pixel has
            inside = np.minimum(inside, jumped[inside])
            jumped = jumped.copy()
            jumped[flat_mask] = inside
        smallest = jumped.reshape(height, width)
        if np.array_equal(smallest, labels):
            break
        labels = smallest
    roots, dense = np.unique(labels[mask], return_inverse=True)
    out = np.zeros((height, width), dtype=np.int32)
    out[mask] = dense.ravel() + 1
    return out, len(roots)
