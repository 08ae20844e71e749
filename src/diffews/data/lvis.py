"""LVIS-92i: LVIS v1 annotations on COCO 2017 images, decoded by pycocotools.

Layout, under the data root::

    LVIS/train2017/<id>.jpg
    LVIS/val2017/<id>.jpg
    LVIS/annotations/lvis_v1_train.json
    LVIS/annotations/lvis_v1_val.json

Images are found through each entry's ``coco_url`` (LVIS val uses images of both COCO 2017
folders). Classes are LVIS category ids. The folds are defined on the val annotations: the
categories annotated in at least 2 val images, in id order, interleaved into 10 folds
(fold i = every 10th class from position i; 92 classes each on LVIS v1). "trn" uses the train
annotations with the same fold classes.
"""

from __future__ import annotations

from pathlib import Path

from .instances import InstanceAnnotations, InstanceBenchmark, InstanceSplit, key_from_coco_url
from .source import Benchmark, CheckItem, check_path, count_missing, require_file
from .splits import Pair, interleaved_folds, list_files, write_generated_lists

NAME = "lvis"
SPLITS = ("trn", "val")
NUM_FOLDS = 10
MIN_IMAGES = 2
ANNOTATION_FILES = {"trn": "lvis_v1_train.json", "val": "lvis_v1_val.json"}
FIX = "LVIS-92i needs LVIS/{train2017,val2017} and LVIS/annotations/lvis_v1_{train,val}.json under the root (see 'Benchmark data' in the README)"


def annotation_file(root: Path, split: str) -> Path:
    return Path(root) / "LVIS" / "annotations" / ANNOTATION_FILES[split]


def load(root: Path, split: str) -> InstanceBenchmark:
    """A split's annotations, class id -> category id (the identity), fold -> class ids."""
    annotations = InstanceAnnotations(require_file(annotation_file(root, split), FIX), key_from_coco_url)
    reference = annotations if split == "val" else InstanceAnnotations(require_file(annotation_file(root, "val"), FIX), key_from_coco_url)
    eligible = [c for c, images in reference.category_images.items() if len(images) >= MIN_IMAGES]
    category_of_class = {c: c for c in annotations.categories}
    fold_classes = interleaved_folds(eligible, NUM_FOLDS)
    return InstanceBenchmark(NAME, annotations, Path(root) / "LVIS", category_of_class, fold_classes, FIX)


def generate_pairs(root: Path, split: str) -> dict[int, list[Pair]]:
    """Fold -> (image key, class) pairs of a split, from the annotations."""
    return load(root, split).fold_pairs()


def open_split(root: Path, split: str, fold: int | None, splits: Path | None = None, trust_pickle: bool = False) -> InstanceSplit:
    """An LVIS-92i split of a fold; pairs from split lists in `splits`, else from the annotations."""
    return load(root, split).open_split(split, fold, splits, trust_pickle)


def check(root: Path, splits: Path | None = None) -> list[CheckItem]:
    """What `diffews data check lvis` reports (with `splits`: also the split lists there)."""
    base = Path(root) / "LVIS"
    items = [
        check_path(base / folder, f"LVIS/{folder}", len(list((base / folder).glob("*.jpg"))) if (base / folder).is_dir() else None)
        for folder in ("train2017", "val2017")
    ]
    for split, name in ANNOTATION_FILES.items():
        path = annotation_file(root, split)
        items.append(check_path(path, f"LVIS/annotations/{name}"))
        if path.is_file():
            loaded = InstanceAnnotations(path, key_from_coco_url)
            items.append(count_missing([base / f"{k}.jpg" for k in sorted(loaded.ids)], f"{split} images listed in {name}"))
    if splits is not None:
        items.append(count_missing(list_files(splits, SPLITS, NUM_FOLDS), "split lists"))
    return items


def write_split_lists(root: Path, out: Path) -> list[str]:
    """`diffews data splits lvis`: the pair lists of every split, generated from the annotations."""
    return write_generated_lists(lambda split: generate_pairs(root, split), SPLITS, out)


BENCHMARK = Benchmark(NAME, "LVIS-92i", SPLITS, NUM_FOLDS, open_split, check, write_split_lists)
