"""Build a few-shot segmentation benchmark by pasting cut-out objects onto backgrounds.

Input cut-outs: ``<objects>/<class>/<source>__<anything>.png`` (RGBA; alpha = the object's mask).
The part before ``__`` names the cut-out's *source* (an icon theme, an artist, a product line); a
name without ``__`` has the source ``""``. An optional ``<objects>/manifest.jsonl`` (as written by
`diffews data icons`) gives each file's origin and licence. Backgrounds: every image under
``<backgrounds>`` (plus its optional ``manifest.jsonl``).

Each image shows one class: a source is chosen for the image (round robin over as many of the
class's sources as give each at least 2 images of the split), then 1-3 instances of the class from that source, at random size, position and
rotation, and 0-3 distractors of other classes from the same source where it has them, each of
about the size of the targets; paste order is random, so distractors may hide parts of the targets
and vice versa. The mask is the visible part of the target instances (see `diffews.data.paste`); a
layout where a target keeps less than `min_visible` of itself is drawn again. Image i of class c
in split s is a pure function of (seed, s, c, i): the same seed gives the same bytes, whatever
the number of workers.

Output (read by the ``composite`` benchmark, `diffews.data.composite`; each split folder is also a
custom-folder root)::

    <out>/<split>/<class>/<source>__<n>.jpg          image (trn, val and test, every class)
    <out>/<split>/<class>/<source>__<n>_mask.png     mask, 255 = the class
    <out>/benchmark.json                              folds, options, counts
    <out>/manifest.jsonl                              per image: every pasted object's file, origin, licence

With ``label_distractors`` (trn only) an image is also written as
``<out>/trn/<distractor class>/<source>__<class>-<n>.jpg`` with the distractor class's mask.

Classes are dealt into `NUM_FOLDS` disjoint folds; classes whose names share their first word
(``go-next``, ``go-up``) go to the same fold, so a held-out class has no near-namesake in training.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..io import check_new_folder, new_folder
from ..processing.images import open_image_file, shown_size
from .composite import image_stem, read_description, source_of
from .manifest import read_manifest, write_manifest
from .paste import OPAQUE, Pasted, paste_all, transform_cutout, visible_fraction
from .workers import run_jobs

FORMAT = "diffews-composite"
NUM_FOLDS = 4
SPLIT_NAMES = ("trn", "val", "test")
MASK_SUFFIX = "_mask.png"
LABELLED_SPLIT = "trn"
"""The split whose images `CompositeOptions.label_distractors` also files under their distractors' classes."""
JPEG_QUALITY = 95
LAYOUT_TRIES = 20
BACKGROUND_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})


@dataclass(frozen=True)
class Cutout:
    """One cut-out file: its class, source (the file-name part before ``__``), origin and licence."""

    path: Path
    class_name: str
    source: str
    origin: str | None = None
    licence: str | None = None


@dataclass(frozen=True)
class CompositeOptions:
    """How images are drawn. Ranges are inclusive ``(low, high)``; sizes are fractions of the image side.

    With `label_distractors`, each trn image is also filed under every distractor class whose
    objects each keep `min_visible` of themselves, with that class's mask: the same picture has a
    different target depending on the class asked for, so a model must read the support to know what
    to segment (it cannot learn each image's answer). val and test keep one class per image.
    """

    size: int = 256
    images_per_class: int = 24
    eval_images_per_class: int = 12
    instances: tuple[int, int] = (1, 3)
    distractors: tuple[int, int] = (0, 3)
    scale: tuple[float, float] = (0.3, 0.6)
    distractor_scale: tuple[float, float] = (0.8, 1.25)
    max_rotation: float = 30.0
    min_visible: float = 0.4
    same_source_distractors: bool = True
    same_source_fraction: float = 0.5
    min_images_per_source: int = 2
    label_distractors: bool = False
    seed: int = 0

    def images(self, split: str) -> int:
        return self.images_per_class if split == "trn" else self.eval_images_per_class


def find_cutouts(objects: Path | Sequence[Path]) -> dict[str, list[Cutout]]:
    """Class name -> its cut-outs (sorted), from ``<folder>/<class>/*.png`` of one or more folders; `InputError` for a bad folder.

    A class found in several folders gets the cut-outs of all of them (more sources of one object).
    """
    folders = [Path(objects)] if isinstance(objects, (str, Path)) else [Path(p) for p in objects]
    repeated = [str(folder) for index, folder in enumerate(folders) if folder.resolve() in {f.resolve() for f in folders[:index]}]
    if repeated:
        raise InputError(f"{repeated[0]}: given twice in --objects (its cut-outs would count twice)")
    classes: dict[str, list[Cutout]] = defaultdict(list)
    for objects_folder in folders:
        if not objects_folder.is_dir():
            raise InputError(f"{objects_folder}: folder not found; --objects needs <class>/<name>.png cut-outs (RGBA)")
        rows = read_manifest(objects_folder)
        for folder in sorted(p for p in objects_folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file() and not p.name.startswith("."))
            classes[folder.name].extend(_cutout(path, folder.name, rows.get(f"{folder.name}/{path.name}", {})) for path in files)
    classes = {name: sorted(cutouts, key=lambda c: c.path) for name, cutouts in sorted(classes.items()) if cutouts}
    if len(classes) < NUM_FOLDS:
        where = ", ".join(map(str, folders))
        raise InputError(f"{where}: {len(classes)} class folder(s) with PNG cut-outs; at least {NUM_FOLDS} are needed (one per fold)")
    return classes


def _cutout(path: Path, class_name: str, row: dict) -> Cutout:
    source = source_of(path.stem)
    return Cutout(path, class_name, source, row.get("source"), row.get("licence"))


def find_backgrounds(folder: Path) -> list[tuple[Path, str | None, str | None]]:
    """(path, origin, licence) of every image under `folder` (sorted; hidden files and folders left out);
    `InputError` if there is none, or for a file whose header is not an image's."""
    if not folder.is_dir():
        raise InputError(f"{folder}: folder not found; --backgrounds needs background images")
    rows = read_manifest(folder)
    paths = sorted(
        p for p in folder.rglob("*")
        if p.suffix.lower() in BACKGROUND_SUFFIXES and p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not paths:
        raise InputError(f"{folder}: no background images ({', '.join(sorted(BACKGROUND_SUFFIXES))})")
    found = []
    for path in paths:
        shown_size(path)  # a file that is not an image is refused now, not part-way through the build
        row = rows.get(path.relative_to(folder).as_posix(), {})
        found.append((path, row.get("source"), row.get("licence")))
    return found


def first_word(class_name: str) -> str:
    """``"go-next"`` -> ``"go"``: the family a class belongs to for fold assignment."""
    return re.split(r"[-_ .]", class_name, maxsplit=1)[0]


def assign_folds(class_names: Sequence[str], seed: int, num_folds: int = NUM_FOLDS) -> list[list[str]]:
    """Classes dealt into `num_folds` disjoint folds of near-equal size, families (`first_word`) kept together (`deal_into`)."""
    folds = deal_into([[] for _ in range(num_folds)], class_names, seed)
    if not all(folds):
        families = {first_word(name) for name in class_names}
        raise InputError(f"{len(class_names)} classes in {len(families)} name families cannot fill {num_folds} folds")
    return folds


def deal_into(folds: list[list[str]], class_names: Sequence[str], seed: int, homes: list[list[str]] | None = None) -> list[list[str]]:
    """`folds` (class names) with `class_names` added, each fold sorted.

    A class whose family (`first_word`) is already in a fold of `homes` (default: `folds`; the same
    number of folds) joins that fold; the other families are shuffled by `seed`, then placed largest
    first into the currently smallest fold.
    """
    folds = [list(fold) for fold in folds]
    home = {first_word(name): index for index, fold in enumerate(folds if homes is None else homes) for name in fold}
    families: dict[str, list[str]] = defaultdict(list)
    for name in sorted(class_names):
        families[first_word(name)].append(name)
    order = sorted(families)
    np.random.default_rng(seed).shuffle(order)
    order.sort(key=lambda f: -len(families[f]))
    for family in order:
        fold = folds[home[family]] if family in home else min(folds, key=len)
        fold.extend(families[family])
    return [sorted(fold) for fold in folds]


@dataclass
class _Sources:
    """Cut-outs indexed for drawing: by class, by (class, source), and classes per source."""

    classes: dict[str, list[Cutout]]
    by_source: dict[tuple[str, str], list[Cutout]] = field(init=False)
    classes_of_source: dict[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_source = defaultdict(list)
        self.classes_of_source = defaultdict(list)
        for name, cutouts in self.classes.items():
            for cutout in cutouts:
                self.by_source[(name, cutout.source)].append(cutout)
        for name, source in sorted(self.by_source):
            self.classes_of_source[source].append(name)

    def sources(self, class_name: str) -> list[str]:
        return sorted({c.source for c in self.classes[class_name]})


@lru_cache(maxsize=2048)
def _load_cutout(path: Path) -> Image.Image:
    """A cut-out as RGBA; `InputError` naming it when it has no alpha channel (its mask would be the
    whole rectangle) or no pixel opaque enough to count as the object's (alpha >= `OPAQUE`: its masks
    would be empty while the picture shows it faintly)."""
    image = open_image_file(path, orient=False)
    if "A" not in image.getbands() and "transparency" not in image.info:
        raise InputError(f"{path}: cut-out without an alpha channel; its alpha is the object's mask (save it as RGBA)")
    image = image.convert("RGBA")
    if image.getchannel("A").getextrema()[1] < OPAQUE:
        raise InputError(f"{path}: cut-out with no visible pixel (its alpha is below {OPAQUE} everywhere; masks count only pixels of at least {OPAQUE})")
    return image


@lru_cache(maxsize=256)
def _load_background(path: Path, side: int) -> Image.Image:
    image = open_image_file(path, orient=False, draft=(side, side)).convert("RGB")
    scale = 1.5 * side / min(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    return image


def background_crop(image: Image.Image, side: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of 1-1.5x `side` (scaled up if the image is small), resized to `side`, maybe mirrored."""
    crop = min(min(image.size), round(side * rng.uniform(1.0, 1.5)))
    left = int(rng.integers(0, image.width - crop + 1))
    top = int(rng.integers(0, image.height - crop + 1))
    patch = image.crop((left, top, left + crop, top + crop)).resize((side, side), Image.BILINEAR)
    if rng.random() < 0.5:
        patch = patch.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(patch)


@dataclass(frozen=True)
class Drawn:
    """One composite image.

    Attributes:
        picture: ``(S, S, 3)`` uint8.
        masks: class name -> ``(S, S)`` bool visible pixels of its objects: the image's class first,
            then (with `CompositeOptions.label_distractors`, in `LABELLED_SPLIT`) every distractor
            class whose objects each keep `min_visible` of themselves.
        row: the manifest row (class, source, background, every pasted object).
    """

    picture: np.ndarray
    masks: dict[str, np.ndarray]
    row: dict


class Composer:
    """Draws the images of a benchmark; `draw(split, class index, image index)` is deterministic."""

    def __init__(self, classes: dict[str, list[Cutout]], backgrounds: list[tuple[Path, str | None, str | None]], options: CompositeOptions) -> None:
        self.index = _Sources(classes)
        self.class_names = sorted(classes)
        self.backgrounds = backgrounds
        self.options = options

    def source_of(self, split: str, class_name: str, image: int) -> str:
        """The source of image `image` of a class in a split.

        A split's images cycle through k of the class's sources, k = as many as give each at least
        `min_images_per_source` images (so same-source supports exist); each split takes the next k
        of the class's sources in a seeded order, wrapping around.
        """
        sources = self.index.sources(class_name)
        order = np.random.default_rng([self.options.seed, self.class_names.index(class_name)]).permutation(len(sources))
        used = max(1, min(len(sources), self.options.images(split) // self.options.min_images_per_source))
        start = SPLIT_NAMES.index(split) * used
        return sources[int(order[(start + image % used) % len(sources)])]

    def draw(self, split: str, class_index: int, image: int) -> Drawn:
        """One composite: its picture, the masks of its visible classes, its manifest row."""
        o = self.options
        class_name = self.class_names[class_index]
        rng = np.random.default_rng([o.seed, SPLIT_NAMES.index(split), class_index, image])
        source = self.source_of(split, class_name, image)
        targets = [self._pick(rng, self.index.by_source[(class_name, source)]) for _ in range(int(rng.integers(o.instances[0], o.instances[1] + 1)))]
        side = o.size
        target_sizes = [side * rng.uniform(*o.scale) / math.sqrt(len(targets)) for _ in targets]
        distractors = [self._distractor(rng, class_name, source) for _ in range(int(rng.integers(o.distractors[0], o.distractors[1] + 1)))]
        distractors = [d for d in distractors if d is not None]
        mean_size = float(np.mean(target_sizes))
        sizes = target_sizes + [mean_size * rng.uniform(*o.distractor_scale) for _ in distractors]
        chosen = targets + distractors
        pixels = [transform_cutout(_load_cutout(c.path), max(4, min(round(s), side)), float(rng.uniform(-o.max_rotation, o.max_rotation))) for c, s in zip(chosen, sizes)]
        for _ in range(LAYOUT_TRIES):
            order = rng.permutation(len(chosen))
            objects = [self._place(rng, pixels[i]) for i in order]
            background_path, background_origin, background_licence = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
            background = background_crop(_load_background(background_path, side), side, rng)
            picture, owner = paste_all(background, objects)
            target_slots = [k for k, i in enumerate(order) if i < len(targets)]
            if all(visible_fraction(owner, objects, k) >= o.min_visible for k in target_slots):
                break
        row = {
            "split": split, "class": class_name, "source": source,
            "background": {"file": str(background_path), "source": background_origin, "licence": background_licence},
            "objects": [
                {
                    "role": "target" if i < len(targets) else "distractor", "class": chosen[i].class_name,
                    "file": str(chosen[i].path), "source": chosen[i].origin, "licence": chosen[i].licence,
                    "top": obj.top, "left": obj.left, "height": int(obj.pixels.shape[0]), "width": int(obj.pixels.shape[1]),
                }
                for obj, i in zip(objects, order.tolist())
            ],
        }
        masks = {class_name: np.isin(owner, [k + 1 for k in target_slots])}
        if o.label_distractors and split == LABELLED_SPLIT:
            slots: dict[str, list[int]] = defaultdict(list)
            for k, i in enumerate(order.tolist()):
                slots[chosen[i].class_name].append(k)
            for other, kept in slots.items():
                if other != class_name and all(visible_fraction(owner, objects, k) >= o.min_visible for k in kept):
                    masks[other] = np.isin(owner, [k + 1 for k in kept])
        return Drawn(picture, masks, row)

    @staticmethod
    def _pick(rng: np.random.Generator, cutouts: list[Cutout]) -> Cutout:
        return cutouts[int(rng.integers(len(cutouts)))]

    def _distractor(self, rng: np.random.Generator, class_name: str, source: str) -> Cutout | None:
        family = first_word(class_name)
        pool = [c for c in self.index.classes_of_source[source] if first_word(c) != family] if self.options.same_source_distractors else []
        if not pool:
            pool = [c for c in self.class_names if first_word(c) != family]
        if not pool:
            return None
        other = pool[int(rng.integers(len(pool)))]
        same = self.index.by_source.get((other, source)) if self.options.same_source_distractors else None
        return self._pick(rng, same or self.index.classes[other])

    def _place(self, rng: np.random.Generator, pixels: np.ndarray) -> Pasted:
        """Uniform position keeping the object inside the image (centred where it is larger)."""
        side = self.options.size
        h, w = pixels.shape[:2]
        top = int(rng.integers(0, side - h + 1)) if h <= side else (side - h) // 2
        left = int(rng.integers(0, side - w + 1)) if w <= side else (side - w) // 2
        return Pasted(pixels, top, left)


_worker: dict[str, object] = {}
"""The composer and staging folder of a compositing process, set once by `_init_worker`: sending the
composer (every cut-out's record) with each task would cost more than drawing the images."""


def _init_worker(composer: Composer, staging: Path) -> None:
    _worker["composer"], _worker["staging"] = composer, staging


def _write_one(job: tuple[str, int, int]) -> list[dict]:
    """Write one composite (and its labelled copies, see `CompositeOptions.label_distractors`); its manifest rows."""
    composer: Composer = _worker["composer"]  # type: ignore[assignment]
    staging: Path = _worker["staging"]  # type: ignore[assignment]
    split, class_index, image = job
    drawn = composer.draw(split, class_index, image)
    row = drawn.row
    source = row["source"] or "image"
    encoded = io.BytesIO()
    Image.fromarray(drawn.picture).save(encoded, format="JPEG", quality=JPEG_QUALITY)
    rows = []
    for class_name, mask in drawn.masks.items():
        copy = class_name != row["class"]
        stem = f"{split}/{class_name}/{image_stem(source, image, row['class'] if copy else None)}"
        (staging / f"{stem}.jpg").write_bytes(encoded.getvalue())
        Image.fromarray(mask.astype(np.uint8) * 255).save(staging / f"{stem}{MASK_SUFFIX}", optimize=False)
        rows.append({"image": f"{stem}.jpg", "mask": f"{stem}{MASK_SUFFIX}", **_relabelled(row, class_name)})
        if copy:
            rows[-1]["copy_of"] = rows[0]["image"]
    return rows


def _relabelled(row: dict, class_name: str) -> dict:
    """`row` with `class_name` as the image's class: its objects become the targets, the others distractors."""
    objects = [{**obj, "role": "target" if obj["class"] == class_name else "distractor"} for obj in row["objects"]]
    return {**row, "class": class_name, "objects": objects}


@dataclass(frozen=True)
class CompositeSummary:
    """What `build_composite` wrote."""

    classes: int
    images: dict[str, int]
    folds: list[int]


def folds_like(
    classes: dict[str, list[Cutout]], reference: Path, deal_new_classes: bool = False, seed: int = 0
) -> tuple[dict[str, list[Cutout]], list[list[str]]]:
    """The classes of `classes` in the folds of the composite benchmark `reference`.

    So a second benchmark (another art style, an independent test set) scores the same held-out
    classes. Classes `reference` lacks are left out, or with `deal_new_classes` added to its folds
    (`deal_into`: a family it has, even through classes missing here, keeps its fold), so a model
    trained on the new benchmark's fold-k training classes never saw a class of `reference`'s fold-k
    name families.
    """
    reference_folds = read_description(reference)["folds"]
    folds = [[name for name in fold if name in classes] for fold in reference_folds]
    if not all(folds):
        raise InputError(f"{reference}: the cut-outs share no class with fold {[bool(f) for f in folds].index(False)} of this benchmark")
    known = {name for fold in reference_folds for name in fold}
    if deal_new_classes:
        folds = deal_into(folds, [name for name in classes if name not in known], seed, homes=reference_folds)
    kept = {name for fold in folds for name in fold}
    return {name: cutouts for name, cutouts in classes.items() if name in kept}, folds


def build_composite(
    objects: Path | Sequence[Path],
    backgrounds: Path,
    out: Path,
    options: CompositeOptions = CompositeOptions(),
    workers: int = 1,
    folds_from: Path | None = None,
    deal_new_classes: bool = False,
) -> CompositeSummary:
    """Write a composite benchmark to the new folder `out` (layout: module docstring); nothing is left on failure.

    Args:
        objects: one folder of cut-outs or several (a class in several gets all their cut-outs).
        folds_from: another composite benchmark whose folds to reuse (`folds_like`); classes it lacks
            are left out, or with `deal_new_classes` added to its folds.
    """
    _check_options(options)
    check_new_folder(Path(out))
    classes = find_cutouts(objects)
    found_backgrounds = find_backgrounds(Path(backgrounds))
    if folds_from is None:
        folds = assign_folds(list(classes), options.seed)
    else:
        classes, folds = folds_like(classes, Path(folds_from), deal_new_classes, options.seed)
    composer = Composer(classes, found_backgrounds, options)
    jobs = [(split, c, i) for split in SPLIT_NAMES for c in range(len(composer.class_names)) for i in range(options.images(split))]
    with new_folder(Path(out)) as staging:
        for split in SPLIT_NAMES:
            for name in composer.class_names:
                (staging / split / name).mkdir(parents=True)
        written = run_jobs(_write_one, jobs, workers, "compositing", "image", chunksize=16, initializer=_init_worker, initargs=(composer, staging))
        rows = [row for job_rows in written for row in job_rows]
        write_manifest(staging, rows)
        images = {split: sum(row["split"] == split for row in rows) for split in SPLIT_NAMES}
        description = {
            "format": FORMAT, "version": 1, "folds": folds, "images": images,
            "labelled_copies": sum("copy_of" in row for row in rows),
            "sources": {name: composer.index.sources(name) for name in composer.class_names},
            "options": asdict(options),
        }
        (staging / "benchmark.json").write_text(json.dumps(description, indent=1) + "\n")
    return CompositeSummary(len(classes), images, [len(f) for f in folds])


def _check_options(o: CompositeOptions) -> None:
    checks = [
        (o.size >= 32 and o.size % 8 == 0, "--size must be a multiple of 8, at least 32", o.size),
        (o.images_per_class >= 2, "--images-per-class must be at least 2", o.images_per_class),
        (o.eval_images_per_class >= 2, "--eval-images-per-class must be at least 2", o.eval_images_per_class),
        (1 <= o.instances[0] <= o.instances[1], "--instances must be LOW-HIGH with 1 <= LOW <= HIGH", o.instances),
        (0 <= o.distractors[0] <= o.distractors[1], "--distractors must be LOW-HIGH with 0 <= LOW <= HIGH", o.distractors),
        (0 < o.scale[0] <= o.scale[1] <= 1, "--scale must be LOW-HIGH with 0 < LOW <= HIGH <= 1", o.scale),
        (0 <= o.max_rotation <= 180, "--max-rotation must be in 0..180 degrees", o.max_rotation),
        (0 <= o.min_visible <= 1, "--min-visible must be in 0..1", o.min_visible),
        (0 <= o.same_source_fraction <= 1, "--same-source-fraction must be in 0..1", o.same_source_fraction),
        (o.min_images_per_source >= 1, "--min-images-per-source must be at least 1", o.min_images_per_source),
        (o.seed >= 0, "--seed must be at least 0", o.seed),
    ]
    for ok, message, value in checks:
        if not ok:
            raise InputError(f"{message}; got {value}")
