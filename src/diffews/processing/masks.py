"""Masks: user formats -> binary, binary <-> 3-channel mask images (thresholding: `.thresholds`).

Binarisation rule (documented in the README), applied to every mask the package reads:

- palette PNG (mode ``P``): the palette *index* is the label; foreground = index not in {0, 255}
  (255 marks "ignore" borders as in PASCAL VOC, treated as background for supports);
- with a non-constant alpha channel (``LA``/``RGBA``): foreground = alpha >= 128;
- colour (``RGB``): foreground = brightest channel >= 128 (white, or any bright colour, on black);
- grayscale and arrays: bool as is; otherwise if every value is in [0, 1] (0/1 masks, float masks)
  foreground = value >= 0.5, else foreground = value >= 128 (0/255 masks); (H, W, 3|4) arrays are
  read as the ``RGB`` / ``RGBA`` images they hold.

Grey masks of whole numbers that read as a label map rather than a mask are refused (`InputError`):
all below 128 with some above 1 (class indices), or labels 1-127 beside 255 as the only value >= 128
(PASCAL VOC's ignore border): give the class's binary mask (``labels == c``) or the palette PNG itself.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import InputError

IGNORE_INDEX = 255
logger = logging.getLogger(__name__)


def pil_mask_to_array(mask: Image.Image, name: str = "mask") -> np.ndarray:
    """Binary (H, W) bool array from a PIL mask, by the module's rule (`name` for messages)."""
    if mask.mode == "P":
        index = np.asarray(mask)
        return (index != 0) & (index != IGNORE_INDEX)
    if mask.mode in ("La", "RGBa"):  # premultiplied alpha: judged by its alpha as LA / RGBA
        mask = mask.convert(mask.mode.upper())
    if mask.mode in ("LA", "RGBA", "PA"):
        drawn = alpha_foreground(np.asarray(mask.getchannel("A")))
        if drawn is not None:
            return drawn
        mask = mask.convert("RGB" if mask.mode in ("RGBA", "PA") else "L")
    if len(mask.getbands()) > 1 and mask.mode != "RGB":  # CMYK, YCbCr, LAB, HSV: judged as they look
        mask = mask.convert("RGB")
    if mask.mode == "RGB":
        return np.asarray(mask).max(axis=2) >= 128
    if mask.mode == "1":
        return np.asarray(mask, dtype=bool)
    return array_mask_to_bool(np.asarray(mask), name)


def alpha_foreground(alpha: np.ndarray) -> np.ndarray | None:
    """The pixels an alpha channel draws: alpha >= 128 (>= 0.5 for floats in [0, 1]); None when the alpha
    is constant (nothing drawn with it: the colour decides)."""
    if alpha.min() == alpha.max():
        return None
    return alpha >= (0.5 if alpha.dtype.kind == "f" and alpha.max() <= 1 else 128)


def array_mask_to_bool(mask: np.ndarray | torch.Tensor, name: str = "mask") -> np.ndarray:
    """Binary bool array from a numeric or bool array, by the module's rule (shape kept).

    Raises:
        InputError: whole-number values that read as a label map (the module's docstring), naming `name`.
    """
    values = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if values.dtype == bool:
        return values
    values = values.astype(np.float32, copy=False)
    binary = _at_half(values)
    if values.size and values.max() > 1:
        _refuse_label_map(values, binary, name)
    return binary


def _at_half(values: np.ndarray) -> np.ndarray:
    """bool as is; values all in [0, 1]: >= 0.5; otherwise >= 128."""
    if values.dtype == bool:
        return values
    values = values.astype(np.float32, copy=False)
    if values.size and values.min() >= 0 and values.max() <= 1:
        return values >= 0.5
    return values >= 128


def _refuse_label_map(values: np.ndarray, binary: np.ndarray, name: str) -> None:
    """`InputError` when whole-number `values` (not all in [0, 1]) read as class labels: values 1-127
    with nothing >= 128 but the ignore index (a grey mask's soft edges come with values 128-254)."""
    labels = (values >= 1) & (values < 128)
    if not labels.any() or (binary.any() and not (values[binary] == IGNORE_INDEX).all()):
        return
    if not np.array_equal(values, np.round(values)):  # fractions: a probability map, not labels
        return
    found = np.unique(values)
    shown = ", ".join(str(int(v)) for v in found[:6]) + (", ..." if found.size > 6 else "")
    if binary.any():
        reason = f"beside values 1-127 only {IGNORE_INDEX} is >= 128, which marks pixels to ignore in label maps (PASCAL VOC's)"
    else:
        reason = "every value is below 128, where a 0-255 mask's foreground starts"
    raise InputError(
        f"{name}: its values ({shown}) read as a label map, not a mask: {reason}; give the class's binary mask "
        f"(e.g. labels == {int(values[labels].min())}) or the palette PNG itself"
    )


def to_binary_mask(mask: Image.Image | np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """(H, W) bool mask from a PIL image, a (H, W) or (1, H, W) array/tensor, or an (H, W, C) colour array.

    Raises:
        InputError: "<name> is empty" when no pixel is foreground (a palette mask whose only labels are
            the ignore index says so); wrong shapes likewise name `name`.
    """
    binary = as_binary_mask(mask, name)
    if not binary.any():
        if isinstance(mask, Image.Image) and mask.mode == "P" and (np.asarray(mask) == IGNORE_INDEX).any():
            raise InputError(
                f"{name} is empty: its only labelled pixels have palette index {IGNORE_INDEX}, which marks pixels to ignore "
                f"(foreground is any index other than 0 and {IGNORE_INDEX})"
            )
        raise InputError(f"{name} is empty")
    return binary


def as_binary_mask(mask: Image.Image | np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """`to_binary_mask` without the emptiness check (an empty mask is returned as all False)."""
    if isinstance(mask, Image.Image):
        mask = ImageOps.exif_transpose(mask)  # upright, as its image is read (`image_to_tensor`)
        binary = pil_mask_to_array(mask, name)
        if mask.mode == "P" and _drawn_inverted(mask):
            logger.warning(
                "%s: a palette mask whose background (index 0) is drawn light and whose labels are dark: diffews reads the "
                "index, not the colour, so the dark part is the foreground; if the light part is meant, save it as a "
                "black-and-white (not palette) image",
                name,
            )
        return binary
    values = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    elif is_colour_mask(values):  # read as the RGB / RGBA image it holds
        drawn = alpha_foreground(values[..., 3]) if values.shape[2] == 4 else None
        return drawn if drawn is not None else _at_half(values[..., :3].max(axis=2))
    if values.ndim != 2:
        raise InputError(f"{name}: expected a (H, W) mask, got shape {tuple(values.shape)}")
    return array_mask_to_bool(values, name)


def is_colour_mask(mask: np.ndarray | torch.Tensor) -> bool:
    """Whether an array or tensor mask is one colour image, ``(H, W, 3|4)`` (channels last)."""
    return mask.ndim == 3 and mask.shape[2] in (3, 4)


def _drawn_inverted(mask: Image.Image) -> bool:
    """Whether a palette mask shows index 0 (background) light and every foreground index it uses dark: a
    black-and-white drawing saved with white first in its palette, which the index rule reads inverted."""
    palette = mask.getpalette() or []

    def light(index: int) -> bool:
        colour = palette[3 * index : 3 * index + 3]
        return len(colour) == 3 and max(colour) >= 128

    if not light(0):  # the usual palette mask (PASCAL's): decided without looking at the pixels
        return False
    used = [int(i) for i in np.unique(np.asarray(mask)) if i not in (0, IGNORE_INDEX)]
    return bool(used) and not any(light(index) for index in used)


def mask_to_image(masks: torch.Tensor) -> torch.Tensor:
    """Binary masks ``(N, 1, H, W)`` in {0, 1} -> mask images ``(N, 3, H, W)``: white (+1) on black (-1)."""
    return (masks * 2 - 1).expand(-1, 3, -1, -1)


def decoded_to_mask_image(decoded: torch.Tensor) -> torch.Tensor:
    """Decoded mask images ``(N, 3, H, W)`` (nominally [-1, 1]) -> ``(N, 3, H, W)`` in [0, 1]: clip, then x 0.5 + 0.5."""
    return (decoded.clamp(-1, 1) + 1) / 2
