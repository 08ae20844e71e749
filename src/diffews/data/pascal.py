"""PASCAL-5i: VOC 2012 images with the SBD-augmented class masks (``SegmentationClassAug``).

Layout (HSNet convention), under the data root::

    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClassAug/<id>.png     class index per pixel (0 background, 1..20, 255 ignore)
    VOC2012/ImageSets/Segmentation/val.txt    the 1449 VOC 2012 val ids

Splits: "val" = the VOC 2012 val ids; "trn" = every other id with an augmented mask.
4 folds of 5 classes: fold i = classes 5i+1 .. 5i+5.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError
from ..processing.images import open_image_file
from .source import (
    Benchmark, CheckItem, FewShotSplit, check_path, count_missing, read_text_lines, require_all, require_dir, require_file,
)
from .splits import Pair, folds_used, list_files, load_pairs, pascal_fold_classes, write_generated_lists

NAME = "pascal"
SPLITS = ("trn", "val")
NUM_FOLDS = 4
CLASS_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
FIX = "PASCAL-5i needs VOC2012/JPEGImages, VOC2012/SegmentationClassAug and VOC2012/ImageSets/Segmentation/val.txt under the root (see 'Benchmark data' in the README)"


class PascalSplit(FewShotSplit):
    """A PASCAL-5i split; image keys are VOC ids such as ``2007_000033``."""

    def __init__(self, base: Path, split: str, fold: int | None, pairs: list[Pair]) -> None:
        classes = [c for f in folds_used(split, fold, NUM_FOLDS) for c in pascal_fold_classes(f)]
        names = {i + 1: name for i, name in enumerate(CLASS_NAMES)}
        super().__init__(NAME, split, fold, classes, names, pairs)
        self.base = base

    def image_path(self, key: str) -> Path:
        return self.base / "JPEGImages" / f"{key}.jpg"

    def target(self, key: str, class_id: int) -> np.ndarray:
        labels = read_label_png(self.base / "SegmentationClassAug" / f"{key}.png")
        return np.where(labels == class_id, 1, np.where(labels == 255, 255, 0)).astype(np.uint8)


def read_label_png(path: Path) -> np.ndarray:
    """Class-index mask ``(H, W)`` uint8 from a palette or grayscale PNG."""
    image = open_image_file(path, orient=False)
    if image.mode not in ("P", "L"):
        raise InputError(f"{path}: expected a palette or grayscale class-index PNG, got mode {image.mode}")
    return np.asarray(image)


def split_ids(root: Path, split: str) -> list[str]:
    """The VOC ids of a split."""
    base = require_dir(Path(root) / "VOC2012", FIX)
    val_file = require_file(base / "ImageSets" / "Segmentation" / "val.txt", FIX)
    val = sorted(set(read_text_lines(val_file, "list of image ids", FIX)))
    if split == "val":
        return val
    masks = require_dir(base / "SegmentationClassAug", FIX)
    return sorted({p.stem for p in masks.glob("*.png")} - set(val))


def generate_pairs(root: Path, split: str) -> dict[int, list[Pair]]:
    """Fold -> (id, class) pairs of a split, read from the class masks (every class present in an image)."""
    base = Path(root) / "VOC2012"
    ids = split_ids(root, split)
    require_all([base / "SegmentationClassAug" / f"{i}.png" for i in ids], f"PASCAL {split} masks", FIX)
    pairs: dict[int, list[Pair]] = {f: [] for f in range(NUM_FOLDS)}
    for key in tqdm(ids, desc=f"reading PASCAL {split} masks", unit="mask", leave=False):
        labels = read_label_png(base / "SegmentationClassAug" / f"{key}.png")
        for class_id in np.unique(labels).tolist():
            if 1 <= class_id <= len(CLASS_NAMES):
                pairs[(class_id - 1) // 5].append((key, class_id))
    return pairs


def open_split(root: Path, split: str, fold: int | None, splits: Path | None = None, trust_pickle: bool = False) -> PascalSplit:
    """A PASCAL-5i split of a fold; pairs from split lists in `splits`, else from the masks."""
    base = require_dir(Path(root) / "VOC2012", FIX)
    folds = folds_used(split, fold, NUM_FOLDS)
    pairs = load_pairs(splits, split, folds, partial(generate_pairs, root, split), trust_pickle)
    dataset = PascalSplit(base, split, fold, pairs)
    keys = sorted({key for key, _ in dataset.pairs})
    require_all([dataset.image_path(k) for k in keys], f"PASCAL {split} images", FIX)
    require_all([base / "SegmentationClassAug" / f"{k}.png" for k in keys], f"PASCAL {split} masks", FIX)
    return dataset


def check(root: Path, splits: Path | None = None) -> list[CheckItem]:
    """What `diffews data check pascal` reports (with `splits`: also the split lists there)."""
    base = Path(root) / "VOC2012"
    images = base / "JPEGImages"
    masks = base / "SegmentationClassAug"
    val_file = base / "ImageSets" / "Segmentation" / "val.txt"
    items = [
        check_path(images, "VOC2012/JPEGImages", len(list(images.glob("*.jpg"))) if images.is_dir() else None),
        check_path(masks, "VOC2012/SegmentationClassAug", len(list(masks.glob("*.png"))) if masks.is_dir() else None),
        check_path(val_file, "VOC2012/ImageSets/Segmentation/val.txt"),
    ]
    if all(item.missing is None for item in items):
        for split in SPLITS:
            ids = split_ids(root, split)
            items.append(count_missing([images / f"{i}.jpg" for i in ids], f"{split} images"))
            items.append(count_missing([masks / f"{i}.png" for i in ids], f"{split} masks"))
    if splits is not None:
        items.append(count_missing(list_files(splits, SPLITS, NUM_FOLDS), "split lists"))
    return items


def write_split_lists(root: Path, out: Path) -> list[str]:
    """`diffews data splits pascal`: the pair lists of every split, generated from the class masks."""
    return write_generated_lists(lambda split: generate_pairs(root, split), SPLITS, out)


BENCHMARK = Benchmark(NAME, "PASCAL-5i", SPLITS, NUM_FOLDS, open_split, check, write_split_lists)
