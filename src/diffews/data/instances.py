"""Instance annotations in COCO's JSON format (COCO, LVIS), decoded with pycocotools into class masks."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import InputError
from .source import FewShotSplit, require_all
from .splits import Pair, folds_used, load_pairs


class InstanceAnnotations:
    """One annotation file: images, categories and per-(image, category) masks.

    Attributes:
        keys: image id -> image key (``"<image folder>/<file stem>"``).
        category_images: category id -> sorted ids of the images annotated with it.
    """

    def __init__(self, path: Path, key_of: Callable[[dict], str]) -> None:
        try:
            from pycocotools.coco import COCO
        except ImportError:
            raise InputError("COCO and LVIS need pycocotools: pip install 'diffews[data]'") from None
        try:
            dataset = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InputError(f"{path}: annotation file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"{path}: not a JSON annotation file ({error})") from None
        if not isinstance(dataset, dict) or not {"images", "annotations", "categories"} <= dataset.keys():
            raise InputError(f"{path}: expected COCO-format JSON with images, annotations and categories")
        self.path = Path(path)
        self.coco = COCO()
        self.coco.dataset = dataset
        try:  # entries of the wrong shape (an image that is not an object, a missing id) surface here
            with contextlib.redirect_stdout(io.StringIO()):
                self.coco.createIndex()
            self.keys = {image["id"]: key_of(image) for image in dataset["images"]}
            self.ids = {key: image_id for image_id, key in self.keys.items()}
            self.categories = {c["id"]: c["name"] for c in dataset["categories"]}
            self.category_images = {c: sorted(set(self.coco.catToImgs.get(c, []))) for c in self.categories}
        except (TypeError, KeyError, AttributeError, ValueError) as error:
            raise InputError(
                f"{path}: not COCO-format annotations (images, annotations and categories must be lists of objects with "
                f"ids; {type(error).__name__}: {error})"
            ) from None

    def pairs(self, class_of_category: dict[int, int]) -> list[Pair]:
        """(image key, class id) for every annotated (image, category), with categories mapped to class ids."""
        return [
            (self.keys[image_id], class_id)
            for category, class_id in class_of_category.items()
            for image_id in self.category_images.get(category, [])
        ]

    def mask(self, key: str, category: int) -> np.ndarray:
        """Union of the category's instance masks (polygons or RLE) in image `key`: ``(H, W)`` uint8 in {0, 1}."""
        image_id = self.ids[key]
        image = self.coco.imgs[image_id]
        mask = np.zeros((image["height"], image["width"]), dtype=np.uint8)
        for annotation in self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id], catIds=[category], iscrowd=None)):
            mask |= self.coco.annToMask(annotation).astype(np.uint8)
        return mask


def key_from_file_name(folder: str) -> Callable[[dict], str]:
    """Image key ``"<folder>/<stem of file_name>"`` (COCO 2014: the folder is the split's image folder)."""
    return lambda image: f"{folder}/{PurePosixPath(image['file_name']).stem}"


def key_from_coco_url(image: dict) -> str:
    """Image key from LVIS's ``coco_url`` (``.../train2017/000000391895.jpg`` -> ``"train2017/000000391895"``)."""
    url = PurePosixPath(image.get("coco_url") or image["file_name"])
    return f"{url.parent.name}/{url.stem}"


@dataclass(frozen=True)
class InstanceBenchmark:
    """One split's annotations and how a benchmark maps them to classes and folds.

    Attributes:
        name: "coco" or "lvis".
        annotations: the split's annotation file.
        image_root: the folder image keys are relative to.
        category_of_class: class id -> annotation category id.
        fold_classes: fold -> its class ids.
        fix: how to fix a missing file, for error messages.
    """

    name: str
    annotations: InstanceAnnotations
    image_root: Path
    category_of_class: dict[int, int]
    fold_classes: dict[int, list[int]]
    fix: str

    def fold_pairs(self) -> dict[int, list[Pair]]:
        """Fold -> (image key, class id) pairs: every image annotated with one of the fold's classes."""
        fold_of = {c: fold for fold, classes in self.fold_classes.items() for c in classes}
        pairs: dict[int, list[Pair]] = {fold: [] for fold in self.fold_classes}
        for key, class_id in self.annotations.pairs({self.category_of_class[c]: c for c in fold_of}):
            pairs[fold_of[class_id]].append((key, class_id))
        return pairs

    def open_split(self, split: str, fold: int | None, splits: Path | None, trust_pickle: bool) -> InstanceSplit:
        """The split of `fold`: its classes, its pairs (from split lists or the annotations), its images checked."""
        folds = folds_used(split, fold, len(self.fold_classes))
        classes = [c for f in folds for c in self.fold_classes[f]]
        pairs = load_pairs(splits, split, folds, self.fold_pairs, trust_pickle)
        dataset = InstanceSplit(self, split, fold, classes, pairs)
        keys = sorted({key for key, _ in dataset.pairs})
        require_all([dataset.image_path(k) for k in keys], f"{self.name} {split} images", self.fix)
        return dataset


class InstanceSplit(FewShotSplit):
    """A split whose masks come from instance annotations; class ids map to annotation categories.

    Episodes are class-balanced, as HSNet's COCO-20i (and Matcher's LVIS-92i) draw them.
    """

    class_balanced = True

    def __init__(self, source: InstanceBenchmark, split: str, fold: int | None, class_ids: list[int], pairs: list[Pair]) -> None:
        annotations = source.annotations
        names = {c: annotations.categories[source.category_of_class[c]] for c in class_ids}
        super().__init__(source.name, split, fold, class_ids, names, pairs)
        self.source = source
        unknown = sorted({key for key, _ in self.pairs} - annotations.ids.keys())
        if unknown:
            raise InputError(f"{annotations.path}: {len(unknown)} images of the split lists are not annotated (first: {unknown[0]})")

    def image_path(self, key: str) -> Path:
        return self.source.image_root / f"{key}.jpg"

    def target(self, key: str, class_id: int) -> np.ndarray:
        return self.source.annotations.mask(key, self.source.category_of_class[class_id])
