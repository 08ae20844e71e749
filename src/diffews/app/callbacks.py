"""What the web app does, as plain functions of plain values (no Gradio here).

The UI module wires these to widgets; tests call them directly. Flow: `support_pair` per panel ->
`collect_support`; `query_paths` from the uploads; `segment` (encodes the support set only when it
changed, keeps each query's decoded mask image); `render` (threshold -> overlays, mask PNGs, zip),
which the threshold controls call again without running the model.
"""

from __future__ import annotations

import hashlib
import secrets
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..io import OutputFolder, output_stems
from ..modeling import SupportContext
from ..pipeline import DiffewSPipeline
from ..registry import named_model
from ..processing.images import IMAGE_SUFFIXES, check_image_file, load_image, load_mask
from ..processing.masks import to_binary_mask
from ..processing.overlay import mask_image, overlay_mask
from ..processing.thresholds import check_threshold, masks_at_sizes

MAX_SHOTS = 5
ZIP_NAME = "masks.zip"

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class SupportPair:
    """One support example: an RGB image, its binary mask ``(H, W)`` bool (any size) and where the mask came from."""

    image: Image.Image
    mask: np.ndarray
    source: str


@dataclass
class QueryResult:
    """One segmented query: its name stem, RGB image and decoded mask image ``(C, R, R)`` in [0, 1]
    at the working resolution (binarised by `render` at any threshold and mode)."""

    stem: str
    image: Image.Image
    mask_image: torch.Tensor


@dataclass
class Session:
    """What one browser session keeps between clicks: the encoded support set and the last results.

    `key` names the session (e.g. its output folder).
    """

    key: str = field(default_factory=lambda: secrets.token_hex(8))
    support_key: str | None = None
    support: SupportContext | None = None
    support_encodings: int = 0
    results: list[QueryResult] = field(default_factory=list)


@dataclass(frozen=True)
class Rendered:
    """Results at one threshold: (overlay, caption) pairs for the gallery, the mask PNGs and their zip."""

    gallery: list[tuple[Image.Image, str]]
    mask_files: list[Path]
    zip_file: Path


def model_notice(model: str) -> str | None:
    """The warning of a named model whose masks mean nothing (`diffews.registry.NamedModel.warning`), else None."""
    named = named_model(model)
    return None if named is None or named.warning is None else f"Model '{named.name}': {named.warning}"


def painted_mask(layers: Iterable[Image.Image | None]) -> np.ndarray | None:
    """Union of the painted (non-transparent) pixels of brush layers, ``(H, W)`` bool; None if nothing is painted."""
    painted = None
    for layer in layers:
        if layer is None:
            continue
        alpha = np.asarray(layer.convert("RGBA"))[..., 3] > 0
        painted = alpha if painted is None else painted | alpha
    return painted if painted is not None and painted.any() else None


def support_pair(
    index: int, image: Image.Image | None, layers: Sequence[Image.Image | None], mask_file: str | None
) -> SupportPair | None:
    """Support panel `index` (1-based) -> a pair, or None when the panel is empty.

    The mask is the uploaded `mask_file` if given (read by `diffews.processing.masks`' rule),
    else what was painted on the image in brush `layers`.

    Raises:
        InputError: a mask without an image, an image without a mask, an unreadable or empty mask.
    """
    if image is None:
        if mask_file:
            raise InputError(f"support pair {index}: a mask but no image; add the image it belongs to")
        return None
    name = Path(mask_file).name if mask_file else "painted"
    if mask_file:
        mask = load_mask(mask_file, f"support mask {index} ({name})")
    else:
        painted = painted_mask(layers)
        if painted is None:
            raise InputError(f"support pair {index}: no mask; upload a mask or paint the object on the image")
        mask = to_binary_mask(painted, f"support mask {index} ({name})")
    # Empty panels are skipped, so the set's numbering can differ from the panels': name the panel.
    return SupportPair(image.convert("RGB"), mask, f"Example {index}, {name}")


def collect_support(pairs: Iterable[SupportPair | None]) -> list[SupportPair]:
    """The filled support panels, in order; at least one and at most `MAX_SHOTS`."""
    filled = [pair for pair in pairs if pair is not None]
    if not filled:
        raise InputError("no support example: add at least one image with its mask (uploaded or painted)")
    if len(filled) > MAX_SHOTS:
        raise InputError(f"{len(filled)} support examples; the app takes at most {MAX_SHOTS}")
    return filled


def query_paths(files: Iterable[str | Path | None]) -> list[Path]:
    """Uploaded files (single files and folder contents) -> the image files among them, checked.

    Files whose suffix is not an image's (e.g. a folder's ``.DS_Store``) are skipped.

    Raises:
        InputError: no image files, an unreadable image (named), two images with the same name.
    """
    paths = list(dict.fromkeys(Path(f) for f in files if f))
    images = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise InputError("no query images: upload image files or a folder of images")
    output_stems(images)
    for path in images:
        check_image_file(path)
    return images


def support_key(pairs: Sequence[SupportPair], resolution: int) -> str:
    """Fingerprint of a support set (pixels, masks, order, resolution): equal keys, equal encodings."""
    digest = hashlib.sha256(str(resolution).encode())
    for pair in pairs:
        for array in (np.asarray(pair.image), pair.mask):
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def segment(
    pipe: DiffewSPipeline,
    session: Session,
    pairs: Sequence[SupportPair],
    queries: Sequence[Path],
    batch_size: int = 4,
    progress: Progress | None = None,
) -> Session:
    """Segment `queries` with the support set `pairs`; the results replace the session's.

    The support set is encoded only when it differs from the session's last one.
    `progress(fraction, description)` is called before each step.
    """
    report = progress or (lambda fraction, description: None)
    key = support_key(pairs, pipe.resolution)
    if key != session.support_key:
        report(0.0, "encoding the support set")
        session.support = pipe.encode_support([p.image for p in pairs], [p.mask for p in pairs], sources=[p.source for p in pairs])
        session.support_key = key
        session.support_encodings += 1
    stems = output_stems(list(queries))
    results = []
    for start in range(0, len(queries), batch_size):
        report(start / len(queries), f"segmenting {start + 1}-{min(start + batch_size, len(queries))} of {len(queries)}")
        images = [load_image(path) for path in queries[start : start + batch_size]]
        output = pipe(images, support=session.support, batch_size=batch_size, output_mask_images=True)
        results.extend(QueryResult(stem, image, decoded) for stem, image, decoded in zip(stems[start:], images, output.mask_images))
    report(1.0, "done")
    session.results = results
    return session


def render(session: Session, threshold: float, mode: str, folder: Path) -> Rendered:
    """Binarise the session's mask images at (`threshold`, `mode`) and write the masks into `folder`.

    Writes ``<stem>_mask.png`` (0/255) per query and ``masks.zip`` holding them all. Same rule as
    `DiffewSPipeline` (`diffews.processing.thresholds.masks_at_sizes`), so the masks equal the
    pipeline's at that threshold.
    """
    check_threshold(threshold, mode)
    if not session.results:
        raise InputError("nothing to show yet: click Segment first")
    gallery, mask_files = [], []
    with OutputFolder(folder) as out:
        for result in session.results:
            mask = masks_at_sizes(result.mask_image[None], [(result.image.height, result.image.width)], threshold, mode)[0][0]
            mask_files.append(out.save_image(mask_image(mask), f"{result.stem}_mask.png"))
            gallery.append((overlay_mask(result.image, mask), f"{result.stem} ({mask.mean():.1%} foreground)"))
        with out.write(ZIP_NAME) as staged, zipfile.ZipFile(staged, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in mask_files:
                archive.write(path, arcname=path.name)
    return Rendered(gallery, mask_files, folder / ZIP_NAME)
