"""Composite benchmarks written by `diffews data composite`: class folders per split, 4 class folds.

Layout, under the root (see `diffews.data.synthesize`)::

    benchmark.json                               {"format": "diffews-composite", "folds": [[class, ...] x 4], ...}
    <split>/<class>/<source>__<n>.jpg            images of trn, val and test, every class
    <split>/<class>/<source>__<n>_mask.png       masks

Fold i holds the classes listed in ``folds[i]``: training on fold i reads the trn images of the
other folds' classes; val and test read fold i's classes (their val and test images, which are
distinct images). Fold None uses every class.

Supports are paired with the query by source (the file-name part before ``__``: the icon theme,
the artist): in a share ``same_source_fraction`` of episodes (from benchmark.json, default 0.5)
the supports come from the query's source where it has enough images, otherwise from other
sources first (`CompositeSplit.support_pools`). Set the attribute on a split to change it, e.g.
1.0 / 0.0 to score same-source and cross-source episodes apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from .custom import FolderSplit, scan_class
from .source import Benchmark, CheckItem, check_path, require_dir, require_file
from .splits import folds_used

NAME = "composite"
SPLITS = ("trn", "val", "test")
NUM_FOLDS = 4
DESCRIPTION = "benchmark.json"
SOURCE_SEPARATOR = "__"
FIX = "build one with 'diffews data composite' (see 'Training data from cut-outs' in the README)"


def read_description(root: Path) -> dict:
    """benchmark.json of a composite root, checked: a format tag and `NUM_FOLDS` disjoint class lists."""
    path = require_file(Path(root) / DESCRIPTION, f"not a composite benchmark; {FIX}")
    try:
        description = json.loads(path.read_text())
        folds = description["folds"]
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{path}: not a composite benchmark description (JSON with \"folds\"); {FIX}") from None
    if description.get("format") != "diffews-composite" or not isinstance(folds, list) or len(folds) != NUM_FOLDS:
        raise InputError(f"{path}: expected format 'diffews-composite' with {NUM_FOLDS} folds; {FIX}")
    if not all(isinstance(fold, list) and fold and all(isinstance(name, str) for name in fold) for fold in folds):
        raise InputError(f"{path}: each fold must be a non-empty list of class names; {FIX}")
    same_source_fraction(description, path)
    names = [name for fold in folds for name in fold]
    if len(names) != len(set(names)):
        raise InputError(f"{path}: folds are not disjoint")
    return description


def same_source_fraction(description: dict, path: Path) -> float:
    """``options.same_source_fraction`` of the benchmark.json at `path` (default 0.5), checked."""
    options = description.get("options", {})
    fraction = options.get("same_source_fraction", 0.5) if isinstance(options, dict) else None
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise InputError(f"{path}: options.same_source_fraction must be a number from 0 to 1 (options a mapping); {FIX}")
    return float(fraction)


def source_of(key: str) -> str:
    """``"<class>/<source>__<n>"`` -> ``"<source>"`` (``""`` without a separator)."""
    stem = key.rsplit("/", 1)[-1]
    return stem.split(SOURCE_SEPARATOR)[0] if SOURCE_SEPARATOR in stem else ""


def image_stem(source: str, number: int, picture_class: str | None = None) -> str:
    """File stem of image `number` of `source`: ``<source>__<n>``; for a labelled copy of a picture drawn
    for another class, ``<source>__<picture class>-<n>``. Read back by `source_of` and `picture_class`."""
    copy = f"{picture_class}-" if picture_class is not None else ""
    return f"{source}{SOURCE_SEPARATOR}{copy}{number:04d}"


def picture_class(key: str) -> str | None:
    """The class a labelled copy's picture was drawn for: ``"<class>/<source>__<picture class>-<n>"`` -> ``"<picture class>"``.

    None for an image of its own class (``"<class>/<source>__<n>"``).
    """
    stem = key.rsplit("/", 1)[-1]
    rest = stem.split(SOURCE_SEPARATOR, 1)[-1]
    return rest.rsplit("-", 1)[0] if "-" in rest else None


class CompositeSplit(FolderSplit):
    """A `FolderSplit` whose support draw prefers the query's source in a share of episodes.

    Labelled copies (``diffews data composite --label-distractors``) of pictures drawn for a class
    the split does not use are left out, so a fold's training never sees a held-out class's pictures.
    Its masks are written at their pictures' size, so one that does not fit is refused.
    """

    strict_mask_shapes = True

    def __init__(self, split: str, fold: int | None, image_root: Path, class_names: list[str], same_source_fraction: float) -> None:
        kept = {*class_names, None}  # None: an image of its own class
        super().__init__(NAME, split, image_root, image_root, class_names, keep=lambda key: picture_class(key) in kept)
        self.fold = fold
        self.same_source_fraction = same_source_fraction

    def support_pools(self, query: str, class_id: int, rng: np.random.Generator) -> list[list[str]]:
        """Same-source images first in a share `same_source_fraction` of draws, other sources first otherwise."""
        others = [key for key in self.images_of_class[class_id] if key != query]
        same = [key for key in others if source_of(key) == source_of(query)]
        different = [key for key in others if source_of(key) != source_of(query)]
        return [same, different] if rng.random() < self.same_source_fraction else [different, same]


def open_split(root: Path, split: str, fold: int | None, splits: Path | None = None, trust_pickle: bool = False) -> CompositeSplit:
    """The classes of `fold` a split uses (see the module docstring), every image of each."""
    if splits is not None:
        raise InputError(f"composite benchmarks keep their folds in {DESCRIPTION}; drop --splits")
    description = read_description(root)
    image_root = require_dir(Path(root) / split, f"the {split} split of a composite benchmark is missing; {FIX}")
    names = sorted(name for f in folds_used(split, fold, NUM_FOLDS) for name in description["folds"][f])
    return CompositeSplit(split, fold, image_root, names, same_source_fraction(description, Path(root) / DESCRIPTION))


def check(root: Path, splits: Path | None = None) -> list[CheckItem]:
    """What `diffews data check composite` reports."""
    root = Path(root)
    items = [check_path(root / DESCRIPTION, DESCRIPTION)]
    if items[0].missing:
        return items
    description = read_description(root)
    for split in SPLITS:
        images, missing = 0, []
        for name in (n for fold in description["folds"] for n in fold):
            folder = root / split / name
            if not folder.is_dir():
                missing.append(str(folder))
                continue
            images += len(scan_class(folder, folder))
        items.append(CheckItem(f"{split} images", images, f"{len(missing)} class folders (first: {missing[0]})" if missing else None))
    return items


BENCHMARK = Benchmark(NAME, "cut-out composite", SPLITS, NUM_FOLDS, open_split, check, default_split="test")
