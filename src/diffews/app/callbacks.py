"""What the web app does, as plain functions of plain values (no Gradio here).

The UI module wires these to widgets; tests call them directly. Flow: `support_pair` per panel ->
`collect_support`; `query_paths` from the uploads; `segment` (encodes the support set only when it
changed, keeps each query's decoded mask image); `render` (threshold -> overlays, mask PNGs, zip),
which the threshold controls call again without running the model.

Several classes: `collect_classes` (name -> its panels' pairs) -> `segment_classes` (each class's
supports encoded only when they changed) -> `render_classes` (label maps, overlays with a legend,
``annotations.json`` in COCO format, zip).
"""

from __future__ import annotations

import hashlib
import json
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
from ..pipeline.pipeline import label_maps_at_sizes
from ..processing.coco_export import CocoWriter
from ..processing.images import IMAGE_SUFFIXES, check_image_file, load_image, load_mask, rgb_image
from ..processing.labels import check_class_names, class_colors, label_image
from ..processing.masks import to_binary_mask
from ..processing.overlay import mask_image, overlay_labels, overlay_mask
from ..processing.thresholds import check_threshold, masks_at_sizes

MAX_SHOTS = 5
MAX_CLASSES = 3
ZIP_NAME = "masks.zip"
LABELS_ZIP_NAME = "labels.zip"
COCO_NAME = "annotations.json"

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
    at the working resolution (binarised by `render` at any threshold and mode); with several
    classes, ``(N, C, R, R)``, one per class (`render_classes`), and the query's file name."""

    stem: str
    image: Image.Image
    mask_image: torch.Tensor
    file_name: str = ""


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
    class_names: list[str] = field(default_factory=list)
    class_keys: dict[str, str] = field(default_factory=dict)
    class_contexts: dict[str, SupportContext] = field(default_factory=dict)


@dataclass(frozen=True)
class Rendered:
    """Results at one threshold: (overlay, caption) pairs for the gallery, the mask PNGs (label maps
    with several classes) and their zip; with several classes also the COCO file and the legend,
    (class name, ``#rrggbb`` colour) pairs in label order."""

    gallery: list[tuple[Image.Image, str]]
    mask_files: list[Path]
    zip_file: Path
    coco_file: Path | None = None
    legend: list[tuple[str, str]] = field(default_factory=list)


def model_notice(model: str) -> str | None:
    """The warning of a named model whose masks mean nothing (`diffews.registry.NamedModel.warning`), else None."""
    named = named_model(model)
    return None if named is None or named.warning is None else f"Model '{named.name}': {named.warning}"


def model_status(model: str, resolution: int) -> str:
    """The page's status line: which model segments, at which working resolution."""
    return f"Model **{model}**, ready (working resolution {resolution} px)."


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
    index: int, image: Image.Image | None, layers: Sequence[Image.Image | None], mask_file: str | None,
    panel: str | None = None,
) -> SupportPair | None:
    """Support panel `index` (1-based) -> a pair, or None when the panel is empty.

    The mask is the uploaded `mask_file` if given (read by `diffews.processing.masks`' rule),
    else what was painted on the image in brush `layers`. `panel` names the class panel it sits in
    (e.g. "class 2") in messages, where there are several.

    Raises:
        InputError: a mask without an image, an image without a mask, an unreadable or empty mask.
    """
    where = f"{panel}, " if panel else ""
    if image is None:
        if mask_file:
            raise InputError(f"{where}support pair {index}: a mask but no image; add the image it belongs to")
        return None
    name = Path(mask_file).name if mask_file else "painted"
    if mask_file:
        mask = load_mask(mask_file, f"{where}support mask {index} ({name})")
    else:
        painted = painted_mask(layers)
        if painted is None:
            raise InputError(f"{where}support pair {index}: no mask; upload a mask or paint the object on the image")
        mask = to_binary_mask(painted, f"{where}support mask {index} ({name})")
    # Empty panels are skipped, so the set's numbering can differ from the panels': name the panel.
    return SupportPair(rgb_image(image), mask, f"{where}Example {index}, {name}")


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

    Hidden files (a folder's ``.DS_Store``, macOS ``._name.jpg``) and files whose suffix is not one
    diffews reads are skipped, as on the command line.

    Raises:
        InputError: no image files (naming the accepted types), an unreadable image (named), two images
            with the same name.
    """
    paths = list(dict.fromkeys(Path(f) for f in files if f))
    images = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    if not images:
        raise InputError(f"no query images: upload image files or a folder of images ({', '.join(sorted(IMAGE_SUFFIXES))})")
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
    session.class_names = []
    return session


def collect_classes(entries: Iterable[tuple[str | None, Iterable[SupportPair | None]]]) -> dict[str, list[SupportPair]] | None:
    """Class panels (name, support pairs) -> class name -> its filled pairs, in panel order; None
    when only the first panel is used (one class: `collect_support`, binary masks).

    Panels with neither a name nor an example are skipped.

    Raises:
        InputError: a class without a name or without examples, more than `MAX_SHOTS` examples,
            names that repeat (ignoring case) or are not valid file-name parts.
    """
    entries = [(str(name or "").strip(), [pair for pair in pairs if pair is not None]) for name, pairs in entries]
    if not any(name or pairs for name, pairs in entries[1:]):
        return None
    used = [(index, name, pairs) for index, (name, pairs) in enumerate(entries, 1) if name or pairs]
    for index, name, pairs in used:
        if not name:
            raise InputError(f"class {index}: give the class a name (needed with several classes)")
        if not pairs:
            raise InputError(f"class {name!r}: no support example; add an image with its mask")
        if len(pairs) > MAX_SHOTS:
            raise InputError(f"class {name!r}: {len(pairs)} support examples; the app takes at most {MAX_SHOTS}")
    check_class_names([name for _, name, _ in used], "classes")
    return {name: pairs for _, name, pairs in used}


def segment_classes(
    pipe: DiffewSPipeline,
    session: Session,
    classes: dict[str, Sequence[SupportPair]],
    queries: Sequence[Path],
    batch_size: int = 4,
    progress: Progress | None = None,
) -> Session:
    """Segment every class of `classes` in `queries` (`DiffewSPipeline.segment_classes`); the results
    replace the session's. A class's supports are encoded only when they differ from the last ones
    it had in this session."""
    report = progress or (lambda fraction, description: None)
    contexts = {}
    for name, pairs in classes.items():
        key = support_key(pairs, pipe.resolution)
        if session.class_keys.get(name) != key:
            report(0.0, f"encoding the examples of {name}")
            session.class_contexts[name] = pipe.encode_classes(
                {name: ([p.image for p in pairs], [p.mask for p in pairs])}, sources={name: [f"{name}: {p.source}" for p in pairs]}
            )[name]
            session.class_keys[name] = key
            session.support_encodings += 1
        contexts[name] = session.class_contexts[name]
    session.class_keys = {name: session.class_keys[name] for name in contexts}
    session.class_contexts = dict(contexts)
    stems = output_stems(list(queries))
    results = []
    for start in range(0, len(queries), batch_size):
        report(start / len(queries), f"segmenting {start + 1}-{min(start + batch_size, len(queries))} of {len(queries)}")
        paths = queries[start : start + batch_size]
        images = [load_image(path) for path in paths]
        output = pipe.segment_classes(images, contexts, batch_size=batch_size, output_mask_images=True)
        results.extend(
            QueryResult(stem, image, decoded, path.name) for stem, image, decoded, path in zip(stems[start:], images, output.mask_images, paths)
        )
    report(1.0, "done")
    session.results = results
    session.class_names = list(contexts)
    return session


def legend(names: Sequence[str]) -> list[tuple[str, str]]:
    """(class name, ``#rrggbb``) in label order: the colours of the label maps and overlays."""
    return [(name, "#%02x%02x%02x" % color) for name, color in zip(names, class_colors(len(names)))]


def render_classes(session: Session, threshold: float, mode: str, folder: Path) -> Rendered:
    """Label maps of the session's classes at (`threshold`, `mode`) for every class, written into `folder`.

    Writes ``<stem>_labels.png`` (palette PNG, 0 = background, i = the i-th class) per query,
    ``annotations.json`` (COCO, see `diffews.processing.coco_export`) and ``labels.zip`` holding
    them all; the gallery shows overlays with a legend. Same rule as `DiffewSPipeline.segment_classes`.
    """
    check_threshold(threshold, mode)
    if not session.results or not session.class_names:
        raise InputError("nothing to show yet: click Segment first")
    names = session.class_names
    rules = [(threshold, mode)] * len(names)
    coco = CocoWriter(list(names))
    gallery, label_files = [], []
    with OutputFolder(folder) as out:
        for result in session.results:
            size = (result.image.height, result.image.width)
            labels, probabilities, _, _ = label_maps_at_sizes(result.mask_image[None], [size], rules)[0]
            label_files.append(out.save_image(label_image(labels, len(names)), f"{result.stem}_labels.png"))
            shares = ", ".join(f"{name} {np.mean(labels == i):.1%}" for i, name in enumerate(names, 1))
            gallery.append((overlay_labels(result.image, labels, names), f"{result.stem} ({shares})"))
            coco.add(result.file_name or result.stem, labels, probabilities)
        with out.write(COCO_NAME) as staged:
            staged.write_text(json.dumps(coco.to_dict()))
        with out.write(LABELS_ZIP_NAME) as staged, zipfile.ZipFile(staged, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in [*label_files, folder / COCO_NAME]:
                archive.write(path, arcname=path.name)
    _keep_only(folder, [*label_files, folder / COCO_NAME, folder / LABELS_ZIP_NAME])
    return Rendered(gallery, label_files, folder / LABELS_ZIP_NAME, folder / COCO_NAME, legend(names))


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
    _keep_only(folder, [*mask_files, folder / ZIP_NAME])
    return Rendered(gallery, mask_files, folder / ZIP_NAME)


def _keep_only(folder: Path, files: list[Path]) -> None:
    """Delete the files of the session's own `folder` that the last render did not write (an earlier run's
    masks for other queries), so the folder holds what the page shows."""
    keep = {path.name for path in files}
    for path in folder.iterdir():
        if path.is_file() and path.name not in keep:
            path.unlink(missing_ok=True)


def render_results(session: Session, threshold: float, mode: str, folder: Path) -> Rendered:
    """`render_classes` for results of several classes, else `render`."""
    return (render_classes if session.class_names else render)(session, threshold, mode, folder)
