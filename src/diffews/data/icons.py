"""Cut-out objects from freedesktop icon themes: one class per icon name drawn by several themes.

`diffews data icons` walks icon themes (as Debian's ``*-icon-theme`` packages install them under
``/usr/share/icons``), picks the best file of every icon name in every theme (a scalable SVG, else
the largest design size), rasterises it and writes::

    <out>/<class>/<theme>__<icon name>.png      RGBA, cropped to the visible object, alpha = its mask
    <out>/manifest.jsonl                        one line per cut-out: file, class, theme, source, package, licence
    <out>/classes.json                          per class: themes, alias names, silhouette agreement

A class is an icon name drawn by at least `min_themes` themes (the same object by different
artists). Cleaning, in order:

- symbolic (monochrome glyph) icons and contexts whose icons share one silhouette (mime types:
  sheets of paper; places: folders) are skipped;
- names that share one picture (a link or a copy) in some theme are synonyms: only the name most
  themes draw is kept, so no two classes share a picture;
- a theme whose file is byte-identical to another theme's file for the class counts once;
- cut-outs whose silhouette is unlike the class's others are removed (`silhouette_outliers`: while
  the least typical one's mean IoU with the others is below `min_silhouette_iou`), and the class
  is dropped if fewer than `min_themes` are left: the themes drew different things under one name;
- cut-outs whose object is smaller than half of `min_size` after cropping are skipped (upscaled, they blur).

SVG files need the optional rasteriser (``pip install 'diffews[icons]'``, resvg); PNG files are used
as shipped (downscaled to `size` if larger). Themes named in `RESERVED_THEMES` are skipped unless
asked for by name, so a reserved evaluation set stays unseen.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..errors import InputError, first_line
from ..io import check_new_folder, new_folder
from ..processing.images import IMAGE_READ_ERRORS
from .debian import owning_packages, package_licence
from .manifest import write_manifest
from .paste import fit_longer_side
from .workers import run_jobs

logger = logging.getLogger("diffews")

ICON_ROOT = Path("/usr/share/icons")
RESERVED_THEMES = ("oxygen",)
"""Kept for independent evaluation: never gathered unless named in ``--themes``."""
SKIPPED_THEME_FOLDERS = frozenset({"hicolor", "locolor", "default"})
EXCLUDED_CONTEXTS = ("mimetypes", "mimes", "places", "animations", "intl", "panel", "cursors")
"""Contexts skipped by default: their icons share one silhouette (paper sheets, folders) or are not objects."""
SUFFIXES = (".png", ".svg", ".svgz")
SCALABLE = 10_000
"""Design size given to scalable (SVG) icons, so they rank above every bitmap size."""
SILHOUETTE_SIDE = 32
_SIZE_FOLDER = re.compile(r"^(\d+)(?:x(\d+))?(?:@(\d+)x)?$")


@dataclass(frozen=True)
class IconFile:
    """One icon file of a theme. `design_size`: the size folder (``SCALABLE`` for scalable ones)."""

    theme: str
    name: str
    context: str
    design_size: int
    path: Path

    @property
    def vector(self) -> bool:
        return self.path.suffix in (".svg", ".svgz")


def parse_location(relative: Path) -> tuple[str, int] | None:
    """(context, design size) of a file's path inside its theme, e.g. ``48x48/apps/x.png`` -> ("apps", 48).

    Both layouts occur: ``<size>/<context>/`` and ``<context>/<size>/``. None for files of
    symbolic folders, or without a size folder.
    """
    size, context = None, None
    for part in relative.parts[:-1]:
        match = _SIZE_FOLDER.match(part)
        if match:
            size = int(match.group(1)) * int(match.group(3) or 1)
        elif part.startswith("scalable"):
            size = SCALABLE
        elif part == "symbolic":
            return None
        elif context is None:
            context = part
    if size is None:
        return None
    return context or "", size


def scan_theme(theme_dir: Path, excluded_contexts: Iterable[str] = EXCLUDED_CONTEXTS) -> dict[str, IconFile]:
    """Icon name -> its best file in one theme (largest design size, SVG before PNG at the same size)."""
    excluded = set(excluded_contexts)
    best: dict[str, IconFile] = {}
    for folder, _, files in os.walk(theme_dir):
        for file_name in files:
            path = Path(folder) / file_name
            if path.suffix not in SUFFIXES or "-symbolic" in path.stem or not path.is_file():
                continue
            location = parse_location(path.relative_to(theme_dir))
            if location is None or location[0] in excluded:
                continue
            icon = IconFile(theme_dir.name, path.stem, location[0], location[1], path)
            current = best.get(icon.name)
            if current is None or (icon.design_size, icon.vector, str(icon.path)) > (current.design_size, current.vector, str(current.path)):
                best[icon.name] = icon
    return best


def choose_themes(root: Path, themes: Sequence[str] | None) -> tuple[list[Path], dict[Path, str]]:
    """Theme folders to gather (the named ones, else one per Debian package: its largest theme) and their packages.

    Without names, reserved and fallback themes are skipped, and of the variants a package
    installs (dark, light, ...) only the one with the most icon files of its own is kept.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: icon folder not found; install icon themes (see the README) or pass --icon-root")
    if themes:
        folders = [root / name for name in themes]
        missing = [f for f in folders if not f.is_dir()]
        if missing:
            raise InputError(f"{missing[0]}: icon theme not found under {root}")
        return folders, owning_packages(folders)
    candidates = sorted(
        p for p in root.iterdir() if p.is_dir() and p.name not in SKIPPED_THEME_FOLDERS and p.name not in RESERVED_THEMES
    )
    owners = owning_packages(candidates)
    by_package: dict[str, list[Path]] = defaultdict(list)
    for folder in candidates:
        by_package[owners.get(folder, folder.name)].append(folder)
    chosen = sorted((max(group, key=lambda f: (_own_icon_files(f), f.name)) for group in by_package.values()), key=lambda f: f.name)
    return chosen, {f: owners[f] for f in chosen if f in owners}


def _own_icon_files(theme_dir: Path) -> int:
    return sum(
        1 for folder, _, files in os.walk(theme_dir) for name in files
        if name.endswith(SUFFIXES) and not os.path.islink(os.path.join(folder, name))
    )


def file_identity(path: Path) -> str:
    """Content hash of a file (links resolved), so copies and links of one picture compare equal."""
    return hashlib.sha1(path.resolve().read_bytes()).hexdigest()


def build_classes(scans: dict[str, dict[str, IconFile]], min_themes: int = 3) -> dict[str, dict[str, IconFile]]:
    """Class name -> {theme: icon file}: icon names drawn by >= `min_themes` themes, without synonyms.

    Two names are linked when some theme draws them with one picture (a link or a copy). Names are
    taken greedily, most themes first (ties: alphabetical), skipping any name linked to one already
    taken: no two classes then share a picture, so a distractor never shows the target's own art
    under another name. A picture identical to one an earlier theme (alphabetical) gave the class
    is not counted again. A file that cannot be read (no permission) is skipped with a warning.
    """
    identity: dict[Path, str] = {}
    for icon in (icon for icons in scans.values() for icon in icons.values()):
        try:
            identity[icon.path] = file_identity(icon.path)
        except OSError as error:
            logger.warning("%s: skipped, cannot read it (%s)", icon.path, error.strerror or error)
    scans = {theme: {name: icon for name, icon in icons.items() if icon.path in identity} for theme, icons in scans.items()}
    linked: dict[str, set[str]] = defaultdict(set)
    for icons in scans.values():
        by_picture: dict[str, list[str]] = defaultdict(list)
        for name, icon in icons.items():
            by_picture[identity[icon.path]].append(name)
        for names in by_picture.values():
            for name in names:
                linked[name].update(n for n in names if n != name)
    popularity = Counter(name for icons in scans.values() for name in icons)
    classes: dict[str, dict[str, IconFile]] = {}
    for name in sorted(popularity, key=lambda n: (-popularity[n], n)):
        if popularity[name] < min_themes or linked[name] & classes.keys():
            continue
        members: dict[str, IconFile] = {}
        seen: set[str] = set()
        for theme in sorted(scans):
            icon = scans[theme].get(name)
            if icon is not None and identity[icon.path] not in seen:
                seen.add(identity[icon.path])
                members[theme] = icon
        if len(members) >= min_themes:
            classes[name] = members
    return dict(sorted(classes.items()))


def require_rasteriser(path: Path) -> None:
    """`InputError` naming `path` (an SVG to draw) unless the optional SVG rasteriser is installed."""
    try:
        import resvg_py  # noqa: F401
    except ImportError:
        raise InputError(f"{path}: SVG icons need the rasteriser; pip install 'diffews[icons]'") from None


def rasterise(path: Path, size: int) -> Image.Image:
    """An icon file as an RGBA image whose longer side is at most `size` (SVG: exactly `size`).

    Raises:
        ValueError, OSError: the file cannot be drawn or decoded.
    """
    if path.suffix in (".svg", ".svgz"):
        image = Image.open(io.BytesIO(_draw_svg(path, size)))
    else:
        image = Image.open(path)
    image = image.convert("RGBA")
    return fit_longer_side(image, size) if max(image.size) > size else image


def _draw_svg(path: Path, size: int) -> bytes:
    """The PNG bytes resvg draws of `path`, `size` pixels wide; `ValueError` if it cannot, a panic of the
    rasteriser included (pyo3 raises that as a `BaseException`, which would end the whole build)."""
    import resvg_py

    try:
        return bytes(resvg_py.svg_to_bytes(svg_path=str(path), width=size, skip_system_fonts=True))
    except BaseException as error:
        if type(error).__name__ != "PanicException":  # not importable: pyo3 makes the class at run time
            raise
        raise ValueError(f"the SVG rasteriser crashed: {first_line(error)}") from None


def crop_to_object(image: Image.Image, threshold: int = 128) -> Image.Image | None:
    """`image` cropped to the box of its alpha >= `threshold` (the object); None if nothing is that opaque."""
    box = image.getchannel("A").point(lambda a: 255 if a >= threshold else 0).getbbox()
    return image.crop(box) if box else None


def silhouette(image: Image.Image, side: int = SILHOUETTE_SIDE) -> np.ndarray:
    """``(side, side)`` bool: the object's alpha >= 128, fitted (aspect kept) and centred in a square."""
    fitted = fit_longer_side(image.getchannel("A"), side, Image.BILINEAR)
    square = Image.new("L", (side, side))
    square.paste(fitted, ((side - fitted.width) // 2, (side - fitted.height) // 2))
    return np.asarray(square) >= 128


def pairwise_iou(masks: Sequence[np.ndarray]) -> np.ndarray:
    """``(N, N)`` IoU between boolean masks of one shape (1 where both are empty)."""
    flat = np.stack([m.reshape(-1) for m in masks]).astype(np.float64)
    inter = flat @ flat.T
    areas = flat.sum(1)
    union = areas[:, None] + areas[None, :] - inter
    return np.divide(inter, union, out=np.ones_like(inter), where=union > 0)


def mean_pairwise_iou(masks: Sequence[np.ndarray]) -> float:
    """Mean IoU over all pairs of boolean masks of one shape (1.0 for fewer than two)."""
    if len(masks) < 2:
        return 1.0
    iou = pairwise_iou(masks)
    return float(iou[np.triu_indices(len(masks), 1)].mean())


def silhouette_outliers(masks: Sequence[np.ndarray], threshold: float) -> list[int]:
    """Indices of masks removed, one at a time, while the least typical one agrees less than `threshold`.

    The least typical mask has the lowest mean IoU with the others still kept; removal stops when it
    agrees at least `threshold`, or two masks are left.
    """
    iou = pairwise_iou(masks) if masks else np.zeros((0, 0))
    kept = list(range(len(masks)))
    removed = []
    while len(kept) > 2:
        sub = iou[np.ix_(kept, kept)]
        typicality = (sub.sum(1) - 1) / (len(kept) - 1)
        worst = int(np.argmin(typicality))
        if typicality[worst] >= threshold:
            break
        removed.append(kept.pop(worst))
    return removed


def _render_one(job: tuple[Path, Path, int, int]) -> np.ndarray | None:
    """Rasterise, crop and save one cut-out; its silhouette, or None if it is unreadable or its object under `min_size` / 2."""
    source, target, size, min_size = job
    try:
        image = crop_to_object(rasterise(source, size))
    except IMAGE_READ_ERRORS as error:
        logger.warning("%s: skipped, cannot draw it (%s)", source, error)
        return None
    if image is None or 2 * max(image.size) < min_size:
        return None
    image.save(target, format="PNG")
    return silhouette(image)


@dataclass(frozen=True)
class CutoutSummary:
    """What `gather_icons` or `diffews.data.emoji.gather_emoji` wrote."""

    sources: list[str]
    """The themes (icons) or sets (emoji) drawn from."""
    classes: int
    cutouts: int
    outliers: int
    dropped_disagreeing: int


def gather_icons(
    out: Path,
    root: Path = ICON_ROOT,
    themes: Sequence[str] | None = None,
    size: int = 192,
    min_size: int = 32,
    min_themes: int = 3,
    min_silhouette_iou: float = 0.0,
    excluded_contexts: Sequence[str] = EXCLUDED_CONTEXTS,
    workers: int = 1,
) -> CutoutSummary:
    """Write icon cut-outs to the new folder `out` (layout: module docstring); nothing is left on failure.

    Args:
        size: longest side of a cut-out in pixels before cropping (SVG are rendered at this size).
        min_size: skip icons whose largest design size is below this, or whose object's longer side
            after cropping is below half of it (tiny bitmaps, specks).
        min_silhouette_iou: remove cut-outs whose silhouettes agree less than this with their class (0 keeps all).
        workers: processes that rasterise in parallel.
    """
    check_new_folder(Path(out))
    folders, owners = choose_themes(Path(root), themes)
    scans = {}
    for folder in tqdm(folders, desc="scanning themes", unit="theme"):
        icons = scan_theme(folder, excluded_contexts)
        scans[folder.name] = {n: i for n, i in icons.items() if i.design_size >= min_size}
    classes = build_classes(scans, min_themes)
    if not classes:
        raise InputError(f"{root}: no icon name is drawn by {min_themes} of the themes {', '.join(scans)}; add themes")
    packages = {f.name: owners.get(f) for f in folders}
    licences = {theme: package_licence(package) for theme, package in packages.items()}
    vector = next((i.path for members in classes.values() for i in members.values() if i.vector), None)
    if vector is not None:
        require_rasteriser(vector)
    with new_folder(Path(out)) as staging:
        jobs, entries = [], []
        for class_name, members in classes.items():
            (staging / class_name).mkdir()
            for theme, icon in members.items():
                file = f"{class_name}/{theme}__{icon.name}.png"
                jobs.append((icon.path, staging / file, size, min_size))
                entries.append({
                    "file": file, "class": class_name, "theme": theme, "name": icon.name, "context": icon.context,
                    "source": str(icon.path), "package": packages[theme], "licence": licences[theme],
                })
        silhouettes = run_jobs(_render_one, jobs, workers, "rasterising icons", "icon", chunksize=32)
        kept, outliers, dropped, info = clean_cutouts(staging, classes, entries, silhouettes, min_themes, min_silhouette_iou)
        if not info:
            raise InputError(
                f"{root}: none of the {len(classes)} classes is left after cleaning ({dropped} lost themes to silhouettes agreeing "
                f"less than --min-silhouette-iou {min_silhouette_iou}, the rest to unreadable or too small icons)"
            )
        write_description(staging, kept, info)
    return CutoutSummary(sorted(scans), len(info), len(kept), outliers, dropped)


def clean_cutouts(
    staging: Path,
    classes: Iterable[str],
    entries: list[dict],
    silhouettes: list[np.ndarray | None],
    min_themes: int,
    min_silhouette_iou: float,
) -> tuple[list[dict], int, int, dict[str, dict]]:
    """Drop empty cut-outs and silhouette outliers, then classes left with too few themes.

    `entries` (manifest rows with ``"file"``, ``"class"``, ``"theme"``) and `silhouettes` (None: an
    empty cut-out) are parallel; files are relative to `staging`. Returns the kept manifest rows,
    the number of outlier cut-outs removed, of classes dropped for them, and the per-class description.
    """
    by_class: dict[str, list[tuple[dict, np.ndarray]]] = defaultdict(list)
    for entry, mask in zip(entries, silhouettes):
        if mask is None:
            (staging / entry["file"]).unlink(missing_ok=True)
        else:
            by_class[entry["class"]].append((entry, mask))
    kept, info, outliers, dropped = [], {}, 0, 0
    for class_name in classes:
        members = by_class.get(class_name, [])
        removed = set(silhouette_outliers([m for _, m in members], min_silhouette_iou))
        outliers += len(removed)
        dropped += len(members) >= min_themes > len(members) - len(removed)
        for index in sorted(removed):
            (staging / members[index][0]["file"]).unlink()
        members = [member for index, member in enumerate(members) if index not in removed]
        if len(members) < min_themes:
            for entry, _ in members:
                (staging / entry["file"]).unlink()
            (staging / class_name).rmdir()
            continue
        kept.extend(entry for entry, _ in members)
        info[class_name] = {
            "themes": [e["theme"] for e, _ in members],
            "silhouette_iou": round(mean_pairwise_iou([m for _, m in members]), 4),
        }
    return kept, outliers, dropped, info


def write_description(folder: Path, rows: Iterable[dict], classes: dict[str, dict]) -> None:
    """A cut-out folder's ``manifest.jsonl`` (one row per line, keys sorted) and ``classes.json``."""
    write_manifest(folder, rows)
    (folder / "classes.json").write_text(json.dumps(classes, indent=1, sort_keys=True) + "\n")
