"""Images and masks in: files, PIL, numpy and torch, to tensors at the working resolution.

Accepted image inputs (one image each):
- file paths (``str`` or ``Path``);
- PIL images of any mode (EXIF orientation applied; grayscale replicated);
- numpy arrays ``(H, W)`` or ``(H, W, 3|4)``, uint8 in [0, 255] or float in [0, 1];
- torch tensors ``(3, H, W)``, ``(1, H, W)`` or ``(H, W)``, uint8 in [0, 255] or float in [0, 1].

Transparency (an alpha channel, a transparent palette colour) is flattened onto white, whatever the
input: what lies under a fully transparent pixel is arbitrary (an editor or a browser may keep or
black it out), so dropping the alpha would make one picture segment differently by where it came from.

Images are resized to ``resolution x resolution`` (bilinear, antialiased, aspect ratio not kept,
as in the authors' evaluation); masks with nearest neighbour (``nearest-exact``, as PIL does),
whatever their size relative to their image.

Benchmarks can instead resize exactly as the authors' evaluation does (`PREPROCESSING` ``"authors"``):
the 8-bit PIL image with PIL's bilinear filter (what torchvision's ``Resize`` does to a PIL image),
then / 255 and scaled to [-1, 1]; masks with ``F.interpolate``'s ``"nearest"`` (source pixel
floor(i x in / out), not the centred ``"nearest-exact"``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, ImageOps

from ..errors import InputError
from .masks import to_binary_mask

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
"""File suffixes read as images when a folder or glob is expanded."""
IMAGE_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
"""What Pillow raises for a file it cannot read as an image: `OSError` (not an image, truncated),
`ValueError`, `SyntaxError` (a damaged EXIF block or PNG chunk) and a decompression bomb."""

PREPROCESSING: tuple[str, ...] = ("diffews", "authors")
"""How benchmark images and masks reach the working resolution (see the module docstring)."""
MASK_NEAREST = {"diffews": "nearest-exact", "authors": "nearest"}
logger = logging.getLogger(__name__)

ImageInput = Union[str, Path, Image.Image, np.ndarray, torch.Tensor]
MaskInput = Union[str, Path, Image.Image, np.ndarray, torch.Tensor]


def open_image_file(path: str | Path, orient: bool = True, draft: tuple[int, int] | None = None) -> Image.Image:
    """Open and fully decode an image file; one-line `InputError` on failure.

    Args:
        orient: apply the file's EXIF orientation (as a viewer shows the photo); False keeps the pixels as
            stored, which is what the published benchmarks' masks index, and resets the orientation tag
            so that no later step (`image_to_tensor`) turns the picture.
        draft: let a JPEG decode at a reduced scale still at least this size (`PIL.Image.Image.draft`).
    """
    try:
        with Image.open(path) as image:
            if draft is not None:
                image.draft("RGB", draft)
            frames = getattr(image, "n_frames", 1)  # counted before loading: counting seeks through the frames
            if frames > 1 and image.format != "MPO":  # a camera's MPO JPEG is one photo plus previews
                logger.warning("%s: has %d frames (an animation or a multi-page file); only the first is used", path, frames)
            image.load()
            return ImageOps.exif_transpose(image) if orient else _as_stored(image)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, expected an image file") from None
    except IMAGE_READ_ERRORS as error:
        raise InputError(f"{path}: cannot read image ({error})") from None


def _as_stored(image: Image.Image) -> Image.Image:
    """`image` with its orientation tag (EXIF, or XMP read into it) set to "as stored", in place."""
    exif = image.getexif()
    if exif.get(ExifTags.Base.Orientation, 1) != 1:
        exif[ExifTags.Base.Orientation] = 1
        image.info["exif"] = exif.tobytes()  # what copies such as .convert() read the tag from
    return image


def check_image_file(path: str | Path) -> None:
    """Decode an image file fully and drop the pixels, so a truncated or corrupt file is found before
    any work starts (a header check such as PIL's ``verify`` passes truncated JPEGs); one-line `InputError`."""
    open_image_file(path).close()


def load_image(path: str | Path) -> Image.Image:
    """An RGB PIL image from a file (see `rgb_image`)."""
    return rgb_image(open_image_file(path))


HIGH_BIT_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
"""Greyscale PIL modes of more than 8 bits, which PIL's ``convert("RGB")`` clips at 255."""


def rgb_image(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB, transparency flattened (`flatten_transparency`). Greyscale of more than 8
    bits is scaled, not clipped: 16-bit by 255 / 65535; 32-bit integers and floats by their range
    (floats up to 1 x 255, integers up to 255 as they are, up to 65535 as 16-bit, else by their maximum)."""
    if image.mode == "La":  # premultiplied alpha, which Pillow converts only to LA
        image = image.convert("LA")
    if image.mode not in HIGH_BIT_DEPTH_MODES:
        return flatten_transparency(image) if image.has_transparency_data else image.convert("RGB")
    values = np.asarray(image, dtype=np.float64)
    top = float(values.max()) if values.size else 0.0
    if image.mode.startswith("I;16") or 255 < top <= 65535:
        scale = 255 / 65535
    elif image.mode == "F" and top <= 1:
        scale = 255.0
    else:
        scale = 1.0 if top <= 255 else 255 / top
    return Image.fromarray(np.clip(np.round(values * scale), 0, 255).astype(np.uint8)).convert("RGB")


TRANSPARENT_BACKGROUND = (255, 255, 255)
"""The colour transparency is flattened onto (see the module docstring)."""


def flatten_transparency(image: Image.Image) -> Image.Image:
    """An image with transparency as 8-bit RGB composited onto `TRANSPARENT_BACKGROUND`."""
    flat = Image.new("RGBA", image.size, (*TRANSPARENT_BACKGROUND, 255))
    flat.alpha_composite(image.convert("RGBA"))
    return flat.convert("RGB")


def load_mask(path: str | Path, name: str | None = None) -> np.ndarray:
    """A binary (H, W) mask from a file, by the rule of `diffews.processing.masks`.

    Raises:
        InputError: unreadable file, or "<name> is empty" (name defaults to the path).
    """
    return to_binary_mask(open_image_file(path), name or str(path))


def image_to_tensor(image: ImageInput, name: str = "image") -> torch.Tensor:
    """One image -> ``(3, H, W)`` float32 in [0, 1] at its own size."""
    if isinstance(image, (str, Path)):
        image = load_image(image)
    if isinstance(image, Image.Image):
        array = np.asarray(rgb_image(ImageOps.exif_transpose(image)))
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255
    if isinstance(image, np.ndarray):
        if image.ndim == 3 and image.shape[2] in (3, 4):
            tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        elif image.ndim == 2:
            tensor = torch.from_numpy(np.ascontiguousarray(image))[None]
        else:
            raise InputError(f"{name}: numpy images must be (H, W) or (H, W, 3|4), got {image.shape}")
    elif isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.ndim == 2:
            tensor = tensor[None]
        if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
            raise InputError(f"{name}: torch images must be (3, H, W), (1, H, W) or (H, W), got {tuple(image.shape)}")
    else:
        raise InputError(f"{name}: unsupported image type {type(image).__name__}")
    if tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255
    elif tensor.is_floating_point():
        tensor = tensor.float()
        if not tensor.isfinite().all():
            raise InputError(f"{name}: float images must be finite, got NaN or infinite values")
        if tensor.numel() and (tensor.min() < 0 or tensor.max() > 1):
            raise InputError(f"{name}: float images must lie in [0, 1], got [{tensor.min():.3g}, {tensor.max():.3g}]")
    else:
        raise InputError(f"{name}: image dtype must be uint8 or float, got {tensor.dtype}")
    if tensor.shape[0] == 4:  # RGBA: flattened as `flatten_transparency` does, without rounding to 8 bits
        background = torch.tensor(TRANSPARENT_BACKGROUND, dtype=torch.float32)[:, None, None] / 255
        return tensor[:3] * tensor[3:] + background * (1 - tensor[3:])
    return tensor.expand(3, -1, -1).contiguous()


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(3, H, W)`` in [0, 1] -> ``(3, *size)`` in [-1, 1], bilinear with antialiasing."""
    resized = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return resized.clamp(0, 1) * 2 - 1


def working_image_to_array(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` in [-1, 1] (a working image, as `resize_image` gives) -> ``(H, W, 3)`` uint8."""
    return ((image.float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def resize_mask(mask: np.ndarray, size: tuple[int, int], mode: str = "nearest-exact") -> torch.Tensor:
    """(H, W) labels (bool, or uint8 such as {0, 1, 255}) -> ``(1, *size)`` float, nearest neighbour
    (`mode`: ``"nearest-exact"`` or ``"nearest"``, see the module docstring)."""
    tensor = torch.from_numpy(np.array(mask, dtype=np.float32))[None, None]
    return F.interpolate(tensor, size=size, mode=mode)[0]


def resize_pil_image(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """The authors' preprocessing: an RGB PIL image -> ``(3, *size)`` in [-1, 1], resized in 8 bits
    with PIL's bilinear filter, then / 255, x 2 - 1."""
    resized = np.asarray(rgb_image(image).resize((size[1], size[0]), Image.BILINEAR))
    return torch.from_numpy(resized.copy()).permute(2, 0, 1).float() / 255 * 2 - 1


def preprocess_image(image: Image.Image, size: tuple[int, int], preprocessing: str = "diffews") -> torch.Tensor:
    """A benchmark image (RGB PIL) at `size`, ``(3, *size)`` in [-1, 1], by `preprocessing` (`PREPROCESSING`)."""
    if preprocessing == "authors":
        return resize_pil_image(image, size)
    return resize_image(image_to_tensor(image), size)


def shown_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image file as a viewer shows it (its EXIF orientation applied), read from its
    header without decoding the pixels; one-line `InputError` for a file that is not an image."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            turned = image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)  # a quarter turn
    except IMAGE_READ_ERRORS as error:
        raise InputError(f"{path}: cannot read image ({error})") from None
    return (width, height) if turned else (height, width)


def check_mask_shape(mask_size: tuple[int, int], image_size: tuple[int, int], label: str) -> None:
    """`InputError` unless a mask of ``(H, W)`` `mask_size` can cover an image of `image_size`: the
    same aspect ratio within 1 % (any scale; it is resized onto the image)."""
    (mask_height, mask_width), (height, width) = mask_size, image_size
    if abs(mask_width * height - width * mask_height) <= 0.01 * width * mask_height:
        return
    turned = " (the image is shown turned by its EXIF orientation: draw the mask on the picture as shown)" if (mask_height, mask_width) == (width, height) else ""
    raise InputError(f"{label}: {mask_width}x{mask_height} does not fit its image, {width}x{height}{turned}")


def support_label(index: int, source: str | None = None) -> str:
    """How messages name support mask `index` (1-based): ``support mask 2 (cat.png)``."""
    return f"support mask {index}" + (f" ({source})" if source else "")


def check_support_shapes(images: list[Image.Image], masks: list[np.ndarray], sources: list[str]) -> None:
    """`check_mask_shape` for every support pair, named as `prepare_support` names it: the check made
    before a model loads (images as loaded by `load_image`, masks by `load_mask`)."""
    for index, (image, mask, source) in enumerate(zip(images, masks, sources), 1):
        check_mask_shape(mask.shape, (image.height, image.width), support_label(index, source))


def prepare_support(
    image: ImageInput, mask: MaskInput, resolution: int, index: int, source: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Support pair `index` (1-based) at the working resolution.

    Returns image ``(3, R, R)`` in [-1, 1] and mask ``(1, R, R)`` in {0, 1}.

    Raises:
        InputError: "support mask N is empty" (with `source`, e.g. the file, in brackets) when the
            mask has no foreground, before or after resizing; or when the mask's shape is not its
            image's (aspect ratios more than 1 % apart: it cannot cover the picture as drawn).
    """
    if isinstance(mask, (str, Path)):
        source = source or str(mask)
        mask = open_image_file(mask)
    label = support_label(index, source)
    binary = to_binary_mask(mask, label)
    image_tensor = image_to_tensor(image, f"support image {index}")
    check_mask_shape(binary.shape, tuple(image_tensor.shape[1:]), label)
    resized_mask = resize_mask(binary, (resolution, resolution))
    if not resized_mask.any():
        raise InputError(f"{label} is empty after resizing to {resolution}x{resolution} (object too small)")
    return resize_image(image_tensor, (resolution, resolution)), resized_mask
