"""LVIS-92i: LVIS v1 annotations on COCO 2017 images, decoded by pycocotools.

Layout, under the data root::

    LVIS/train2017/<id>.jpg
    LVIS/val2017/<id>.jpg
    LVIS/annotations/lvis_v1_train.json
    LVIS/annotations/lvis_v1_val.json

Images are found through each entry's ``coco_url`` (LVIS val uses images of both COCO 2017
folders). Classes are LVIS category ids. The folds are defined on the val annotations, as
Matcher's LVIS-92i defines them for K-shot episodes: the categories annotated in more than K val
images (a query and K other supports), in id order, dealt into 10 folds of n // 10 classes each
(fold i = every 10th class from position i; 92 for 1 shot on LVIS v1): the folds of 5-shot
evaluations are not those of 1-shot ones. Training ("trn": the train annotations) always uses the
1-shot folds, whatever its shots, so a model trained without fold i is scored on classes it never
saw with 1 shot; the K-shot fold i may hold classes of other 1-shot folds. Generated split lists
(`diffews data splits lvis`) hold the 1-shot folds, so K-shot evaluations generate their pairs.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .instances import InstanceAnnotations, InstanceBenchmark, InstanceSplit, key_from_coco_url
from .source import Benchmark, CheckItem, check_path, count_missing, require_file
from .splits import Pair, interleaved_folds, list_files, write_generated_lists

NAME = "lvis"
SPLITS = ("trn", "val")
NUM_FOLDS = 10
ANNOTATION_FILES = {"trn": "lvis_v1_train.json", "val": "lvis_v1_val.json"}
FIX = "LVIS-92i needs LVIS/{train2017,val2017} and LVIS/annotations/lvis_v1_{train,val}.json under the root (see 'Benchmark data' in the README)"


def annotation_file(root: Path, split: str) -> Path:
    return Path(root) / "LVIS" / "annotations" / ANNOTATION_FILES[split]


def load(root: Path, split: str, shots: int = 1) -> InstanceBenchmark:
    """A split's annotations, class id -> category id (the identity), fold -> class ids (the folds of
    `shots`-shot episodes, see the module docstring)."""
    annotations = InstanceAnnotations(require_file(annotation_file(root, split), FIX), key_from_coco_url)
    reference = annotations if split == "val" else InstanceAnnotations(require_file(annotation_file(root, "val"), FIX), key_from_coco_url)
    eligible = [c for c, images in reference.category_images.items() if len(images) > shots]
    category_of_class = {c: c for c in annotations.categories}
    return InstanceBenchmark(NAME, annotations, Path(root) / "LVIS", category_of_class, lvis_folds(eligible), FIX)


def lvis_folds(class_ids: list[int]) -> dict[int, list[int]]:
    """The eligible classes dealt into `NUM_FOLDS` folds of ``len(class_ids) // NUM_FOLDS`` each (the
    few left over belong to no fold)."""
    size = len(class_ids) // NUM_FOLDS
    return {fold: classes[:size] for fold, classes in interleaved_folds(class_ids, NUM_FOLDS).items()}


def generate_pairs(root: Path, split: str) -> dict[int, list[Pair]]:
    """Fold -> (image key, class) pairs of a split (1-shot folds), from the annotations."""
    return load(root, split).fold_pairs()


def open_split(
    root: Path, split: str, fold: int | None, splits: Path | None = None, trust_pickle: bool = False, shots: int = 1
) -> InstanceSplit:
    """An LVIS-92i split of a fold for `shots`-shot episodes (training: 1-shot folds, see the module
    docstring); pairs from split lists in `splits` (1-shot folds only), else from the annotations."""
    fold_shots = 1 if split == "trn" else shots
    if fold_shots > 1 and splits is not None:
        raise InputError(
            f"--splits {splits}: LVIS-92i split lists hold the 1-shot folds, and the folds of {shots}-shot episodes "
            "hold other classes (those with more than that many val images); leave --splits out"
        )
    return load(root, split, fold_shots).open_split(split, fold, splits, trust_pickle)


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


BENCHMARK = Benchmark(NAME, "LVIS-92i", SPLITS, NUM_FOLDS, open_split, check, write_split_lists, folds_depend_on_shots=True)
