"""COCO-20i: COCO 2014 images with instance annotations decoded by pycocotools.

Layout (HSNet convention for the images), under the data root::

    COCO2014/train2014/COCO_train2014_<id>.jpg
    COCO2014/val2014/COCO_val2014_<id>.jpg
    COCO2014/annotations/instances_train2014.json
    COCO2014/annotations/instances_val2014.json

Splits: "trn" = train2014, "val" = val2014. The 80 categories in id order are classes 1..80;
4 folds of 20: fold i = classes {4k + i + 1 : k = 0..19}. The ground truth of a class in an
image is the union of all its instances (crowd regions included).
"""

from __future__ import annotations

from pathlib import Path

from .instances import InstanceAnnotations, InstanceBenchmark, InstanceSplit, key_from_file_name
from .source import Benchmark, CheckItem, check_path, count_missing, require_dir, require_file
from .splits import Pair, coco_fold_classes, list_files, write_generated_lists
from ..errors import InputError

NAME = "coco"
SPLITS = ("trn", "val")
NUM_FOLDS = 4
NUM_CLASSES = 80
IMAGE_FOLDERS = {"trn": "train2014", "val": "val2014"}
FIX = "COCO-20i needs COCO2014/{train2014,val2014} and COCO2014/annotations/instances_{train,val}2014.json under the root (see 'Benchmark data' in the README)"


def annotation_file(root: Path, split: str) -> Path:
    return Path(root) / "COCO2014" / "annotations" / f"instances_{IMAGE_FOLDERS[split]}.json"


def load(root: Path, split: str) -> InstanceBenchmark:
    """A split's annotations, class id -> category id (the 80 categories in id order), fold -> class ids."""
    require_dir(Path(root) / "COCO2014" / IMAGE_FOLDERS[split], FIX)
    path = require_file(annotation_file(root, split), FIX)
    annotations = InstanceAnnotations(path, key_from_file_name(IMAGE_FOLDERS[split]))
    categories = sorted(annotations.categories)
    if len(categories) != NUM_CLASSES:
        raise InputError(f"{path}: COCO-20i needs the {NUM_CLASSES} COCO categories, found {len(categories)}")
    category_of_class = {i + 1: category for i, category in enumerate(categories)}
    fold_classes = {f: coco_fold_classes(f) for f in range(NUM_FOLDS)}
    return InstanceBenchmark(NAME, annotations, Path(root) / "COCO2014", category_of_class, fold_classes, FIX)


def generate_pairs(root: Path, split: str) -> dict[int, list[Pair]]:
    """Fold -> (image key, class) pairs of a split, from the instance annotations."""
    return load(root, split).fold_pairs()


def open_split(root: Path, split: str, fold: int | None, splits: Path | None = None, trust_pickle: bool = False) -> InstanceSplit:
    """A COCO-20i split of a fold; pairs from split lists in `splits`, else from the annotations."""
    return load(root, split).open_split(split, fold, splits, trust_pickle)


def check(root: Path, splits: Path | None = None) -> list[CheckItem]:
    """What `diffews data check coco` reports (with `splits`: also the split lists there)."""
    base = Path(root) / "COCO2014"
    items = []
    for split, folder in IMAGE_FOLDERS.items():
        images = base / folder
        annotations = annotation_file(root, split)
        items.append(check_path(images, f"COCO2014/{folder}", len(list(images.glob("*.jpg"))) if images.is_dir() else None))
        items.append(check_path(annotations, f"COCO2014/annotations/{annotations.name}"))
        if images.is_dir() and annotations.is_file():
            loaded = InstanceAnnotations(annotations, key_from_file_name(folder))
            items.append(count_missing([base / f"{k}.jpg" for k in sorted(loaded.ids)], f"{split} images listed in {annotations.name}"))
    if splits is not None:
        items.append(count_missing(list_files(splits, SPLITS, NUM_FOLDS), "split lists"))
    return items


def write_split_lists(root: Path, out: Path) -> list[str]:
    """`diffews data splits coco`: the pair lists of every split, generated from the annotations."""
    return write_generated_lists(lambda split: generate_pairs(root, split), SPLITS, out)


BENCHMARK = Benchmark(NAME, "COCO-20i", SPLITS, NUM_FOLDS, open_split, check, write_split_lists)
