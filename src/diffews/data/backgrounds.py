"""Background images for composites: photos from wallpaper folders and generated textures.

`diffews data backgrounds` writes::

    <out>/<source name>.jpg         wallpapers found under the given folders (Debian wallpaper packages
                                    install them under /usr/share/backgrounds and /usr/share/wallpapers),
                                    resized so the shorter side is `size`; identical files once
    <out>/texture_<n>.jpg           generated textures (smooth colour noise, stripes, checks, gradients)
    <out>/manifest.jsonl            one line per file: source, package, licence
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..errors import InputError
from ..io import check_new_folder, new_folder
from ..processing.images import IMAGE_READ_ERRORS
from .debian import owning_packages, package_licence
from .manifest import write_manifest

logger = logging.getLogger(__name__)
WALLPAPER_ROOTS = (Path("/usr/share/backgrounds"), Path("/usr/share/wallpapers"))
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
JPEG_QUALITY = 92


def find_wallpapers(roots: Sequence[Path], min_side: int) -> list[Path]:
    """Image files under `roots` (links followed), one per distinct content, at least `min_side` px on each side."""
    found, seen = [], set()
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file()):
            try:
                digest = hashlib.sha1(path.read_bytes()).hexdigest()
                if digest in seen:
                    continue
                seen.add(digest)
                with Image.open(path) as image:
                    if min(image.size) < min_side:
                        continue
                    image.draft("RGB", (min_side, min_side))  # a JPEG decodes at a reduced scale: cheap
                    image.load()  # a truncated file fails here, not half-way through writing the set
            except IMAGE_READ_ERRORS as error:
                logger.warning("%s: skipped, cannot read it (%s)", path, error)
                continue
            found.append(path)
    return found


def resize_shorter(image: Image.Image, side: int) -> Image.Image:
    """`image` as RGB, scaled (down only) so its shorter side is `side`."""
    image.draft("RGB", (side, side))  # JPEG: decode at a reduced scale when it is much larger
    image = image.convert("RGB")
    scale = side / min(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    return image


def _smooth_noise(rng: np.random.Generator, side: int) -> np.ndarray:
    cells = int(rng.integers(2, 12))
    grid = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(grid).resize((side, side), Image.BICUBIC)).astype(np.float32)


def _coordinates(rng: np.random.Generator, side: int) -> np.ndarray:
    """Positions along a random direction, in periods of a random wavelength."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    return (x * np.cos(angle) + y * np.sin(angle)) / rng.uniform(6, side / 3)


def _two_colours(rng: np.random.Generator, weight: np.ndarray) -> np.ndarray:
    first, second = rng.integers(0, 256, size=(2, 3)).astype(np.float32)
    return first + weight[..., None] * (second - first)


def _stripes(rng: np.random.Generator, side: int) -> np.ndarray:
    return _two_colours(rng, 0.5 + 0.5 * np.sin(2 * np.pi * _coordinates(rng, side)))


def _checks(rng: np.random.Generator, side: int) -> np.ndarray:
    u, v = _coordinates(rng, side), _coordinates(rng, side)
    return _two_colours(rng, ((np.floor(u) + np.floor(v)) % 2).astype(np.float32))


def _gradient(rng: np.random.Generator, side: int) -> np.ndarray:
    ramp = _coordinates(rng, side)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    return _two_colours(rng, ramp)


TEXTURES: tuple[Callable[[np.random.Generator, int], np.ndarray], ...] = (_smooth_noise, _stripes, _checks, _gradient)


def generate_texture(seed: int, side: int) -> Image.Image:
    """A `side` x `side` RGB texture, a pure function of `seed`: one of `TEXTURES`, plus a little grain."""
    rng = np.random.default_rng(seed)
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    pixels = kind(rng, side) + rng.normal(0, rng.uniform(0, 12), size=(side, side, 3))
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class BackgroundSummary:
    """What `gather_backgrounds` wrote."""

    wallpapers: int
    textures: int


def gather_backgrounds(
    out: Path, roots: Sequence[Path] = WALLPAPER_ROOTS, textures: int = 200, size: int = 512, seed: int = 0
) -> BackgroundSummary:
    """Write wallpapers and `textures` generated textures to the new folder `out` (module docstring)."""
    check_new_folder(Path(out))
    wallpapers = find_wallpapers([Path(r) for r in roots], size // 2)
    if not wallpapers and not textures:
        raise InputError(f"no wallpapers under {', '.join(map(str, roots))} and --textures 0: nothing to write")
    owners = owning_packages(wallpapers)
    rows = []
    with new_folder(Path(out)) as staging:
        names = {f"texture_{index:04d}" for index in range(textures)}  # taken by the textures: a wallpaper of that name gets another
        for path in tqdm(wallpapers, desc="wallpapers", unit="image"):
            name = _unique(path.stem, names)
            with Image.open(path) as image:
                resize_shorter(image, size).save(staging / f"{name}.jpg", quality=JPEG_QUALITY)
            package = owners.get(path)
            rows.append({"file": f"{name}.jpg", "source": str(path), "package": package, "licence": package_licence(package)})
        for index in tqdm(range(textures), desc="textures", unit="image"):
            file = f"texture_{index:04d}.jpg"
            generate_texture(seed * 1_000_003 + index, size).save(staging / file, quality=JPEG_QUALITY)
            rows.append({"file": file, "source": f"generated texture (seed {seed}, index {index})", "package": None, "licence": "generated"})
        write_manifest(staging, rows)
    return BackgroundSummary(len(wallpapers), textures)


def _unique(stem: str, taken: set[str]) -> str:
    name, n = stem, 1
    while name in taken:
        n += 1
        name = f"{stem}_{n}"
    taken.add(name)
    return name
