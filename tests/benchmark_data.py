"""Tiny benchmark datasets written in the real on-disk formats, for the data and evaluation tests.

Every image is a small JPEG of noise with its objects painted as flat rectangles, so the files
are real but fast. The writers return what they wrote (image ids, classes, object boxes), so tests
compute their expectations from these records rather than from the readers under test.

Class patterns: with C classes and one image per class index i, image i shows classes
``i + 1`` and ``(i + SHIFT) % C + 1``, so every class appears in exactly two images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

HEIGHT, WIDTH = 30, 40
SHIFT = 7
# COCO's 80 category ids (1..90 with gaps), in order.
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]
PASCAL_PALETTE = [v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)]

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


@dataclass
class Written:
    """What a writer put on disk: image key -> class ids shown, and (key, class) -> boxes."""

    classes_of: dict[str, list[int]] = field(default_factory=dict)
    boxes: dict[tuple[str, int], list[Box]] = field(default_factory=dict)

    def pairs(self, classes: set[int] | None = None) -> list[tuple[str, int]]:
        """Sorted (key, class) pairs, restricted to `classes` if given."""
        return sorted((k, c) for k, cs in self.classes_of.items() for c in cs if classes is None or c in classes)

    def mask(self, key: str, class_id: int) -> np.ndarray:
        """The union of the boxes of `class_id` in `key`, ``(HEIGHT, WIDTH)`` bool."""
        mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
        for x0, y0, x1, y1 in self.boxes.get((key, class_id), []):
            mask[y0:y1, x0:x1] = True
        return mask


def class_pattern(num_classes: int, index: int) -> list[int]:
    """The two 1-based classes image `index` shows (see the module docstring)."""
    return [index % num_classes + 1, (index + SHIFT) % num_classes + 1]


def object_boxes(classes: list[int]) -> list[Box]:
    """Two disjoint boxes, left and right half, for the image's two classes."""
    return [(2, 3, 18, 25), (21, 5, 38, 27)][: len(classes)]


def write_jpeg(path: Path, seed: int, boxes: list[Box]) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    for number, (x0, y0, x1, y1) in enumerate(boxes):
        pixels[y0:y1, x0:x1] = (200, 40 + 100 * number, 60)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)


def write_pascal(root: Path, images_per_split: int = 20) -> dict[str, Written]:
    """VOC2012 + SegmentationClassAug layout; palette label PNGs with a 1-pixel 255 border per object."""
    base = root / "VOC2012"
    (base / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
    (base / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    written = {"trn": Written(), "val": Written()}
    for split, year in (("trn", 2007), ("val", 2008)):
        for index in range(images_per_split):
            key = f"{year}_{index:06d}"
            classes = class_pattern(20, index)
            labels = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
            for class_id, (x0, y0, x1, y1) in zip(classes, object_boxes(classes)):
                labels[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = 255
                labels[y0:y1, x0:x1] = class_id
                written[split].boxes[(key, class_id)] = [(x0, y0, x1, y1)]
            written[split].classes_of[key] = classes
            write_jpeg(base / "JPEGImages" / f"{key}.jpg", year * 1000 + index, object_boxes(classes))
            label_image = Image.fromarray(labels, mode="P")
            label_image.putpalette(PASCAL_PALETTE)
            label_image.save(base / "SegmentationClassAug" / f"{key}.png")
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{k}\n" for k in written["val"].classes_of))
    return written


def write_coco(root: Path, images_per_split: int = 80) -> dict[str, Written]:
    """COCO 2014 layout with instance JSON: first objects as polygons, second as compressed RLE,
    and in every fifth image an extra crowd region of the first class as uncompressed RLE."""
    from pycocotools import mask as mask_utils

    base = root / "COCO2014"
    written = {"trn": Written(), "val": Written()}
    categories = [{"id": c, "name": f"category {c}", "supercategory": "thing"} for c in COCO_CATEGORY_IDS]
    for split, folder in (("trn", "train2014"), ("val", "val2014")):
        images, annotations = [], []
        for index in range(images_per_split):
            image_id = 1000 * (split == "val") + index + 1
            name = f"COCO_{folder}_{image_id:012d}"
            key = f"{folder}/{name}"
            classes = class_pattern(80, index)
            boxes = object_boxes(classes)
            images.append({"id": image_id, "file_name": f"{name}.jpg", "height": HEIGHT, "width": WIDTH})
            write_jpeg(base / folder / f"{name}.jpg", image_id, boxes)
            written[split].classes_of[key] = classes
            for number, (class_id, (x0, y0, x1, y1)) in enumerate(zip(classes, boxes)):
                written[split].boxes[(key, class_id)] = [(x0, y0, x1, y1)]
                box_mask = Written(boxes={(key, class_id): [(x0, y0, x1, y1)]}).mask(key, class_id)
                if number == 0:
                    # Polygon through pixel centres' outer corners: pycocotools fills it exactly.
                    segmentation = [[x0, y0, x1, y0, x1, y1, x0, y1]]
                else:
                    rle = mask_utils.encode(np.asfortranarray(box_mask.astype(np.uint8)))
                    segmentation = {"size": rle["size"], "counts": rle["counts"].decode()}
                annotations.append(_annotation(len(annotations) + 1, image_id, COCO_CATEGORY_IDS[class_id - 1], segmentation, 0))
            if index % 5 == 0:
                crowd = (x0c, y0c, x1c, y1c) = (24, 1, 30, 3)
                crowd_mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
                crowd_mask[y0c:y1c, x0c:x1c] = 1
                counts = _uncompressed_rle(crowd_mask)
                annotations.append(
                    _annotation(len(annotations) + 1, image_id, COCO_CATEGORY_IDS[classes[0] - 1], {"size": [HEIGHT, WIDTH], "counts": counts}, 1)
                )
                written[split].boxes[(key, classes[0])].append(crowd)
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        document = {"images": images, "annotations": annotations, "categories": categories}
        (base / "annotations" / f"instances_{folder}.json").write_text(json.dumps(document))
    return written


def write_lvis(root: Path, classes: int = 25, single_image_classes: int = 5) -> dict[str, Written]:
    """LVIS v1 layout: polygon annotations, images found through ``coco_url`` (val images in both
    COCO 2017 folders). The last `single_image_classes` categories have one val image only (not eligible)."""
    base = root / "LVIS"
    eligible = classes - single_image_classes
    written = {"trn": Written(), "val": Written()}
    categories = [{"id": c, "name": f"lvis category {c}", "frequency": "f"} for c in range(1, classes + 1)]
    for split, annotation_name in (("trn", "lvis_v1_train.json"), ("val", "lvis_v1_val.json")):
        shown = [class_pattern(eligible, i) for i in range(eligible)]
        shown += [[eligible + 1 + i] for i in range(single_image_classes)]
        images, annotations = [], []
        for index, image_classes in enumerate(shown):
            image_id = 5000 * (split == "val") + index + 1
            folder = "train2017" if split == "trn" or index % 4 == 0 else "val2017"
            key = f"{folder}/{image_id:012d}"
            boxes = object_boxes(image_classes)
            images.append(
                {"id": image_id, "coco_url": f"http://images.example/{key}.jpg", "height": HEIGHT, "width": WIDTH}
            )
            write_jpeg(base / f"{key}.jpg", image_id, boxes)
            written[split].classes_of[key] = image_classes
            for class_id, (x0, y0, x1, y1) in zip(image_classes, boxes):
                written[split].boxes[(key, class_id)] = [(x0, y0, x1, y1)]
                annotations.append(_annotation(len(annotations) + 1, image_id, class_id, [[x0, y0, x1, y0, x1, y1, x0, y1]], 0))
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        document = {"images": images, "annotations": annotations, "categories": categories}
        (base / "annotations" / annotation_name).write_text(json.dumps(document))
    return written


def write_fss(root: Path, class_names: dict[str, list[str]], images_per_class: int = 3) -> Path:
    """FSS-1000 layout (``<class>/<n>.jpg`` + ``<n>.png``, masks white on black RGB) and a folder of
    split class lists; returns that folder."""
    splits = root / "fss-splits"
    splits.mkdir(parents=True, exist_ok=True)
    for split, names in class_names.items():
        (splits / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
        for name in names:
            for number in range(1, images_per_class + 1):
                folder = root / "FSS-1000" / name
                box = object_boxes([1])
                write_jpeg(folder / f"{number}.jpg", number, box)
                mask = Written(boxes={("k", 1): box}).mask("k", 1)
                Image.fromarray(np.repeat(mask[..., None] * np.uint8(255), 3, axis=2)).save(folder / f"{number}.png")
    return splits


def write_custom(root: Path, classes: dict[str, int], parallel: bool = False) -> None:
    """Custom folders: ``<class>/<name>.jpg`` with ``<name>_mask.png`` beside, or ``images/`` + ``masks/``."""
    for class_index, (name, count) in enumerate(sorted(classes.items())):
        for number in range(count):
            box = object_boxes([1])
            image_folder = root / "images" / name if parallel else root / name
            mask_path = root / "masks" / name / f"photo{number}.png" if parallel else root / name / f"photo{number}_mask.png"
            write_jpeg(image_folder / f"photo{number}.jpg", 100 * class_index + number, box)
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(Written(boxes={("k", 1): box}).mask("k", 1).astype(np.uint8) * 255).save(mask_path)


def _annotation(annotation_id: int, image_id: int, category: int, segmentation, crowd: int) -> dict:
    return {
        "id": annotation_id, "image_id": image_id, "category_id": category, "segmentation": segmentation,
        "iscrowd": crowd, "area": 1.0, "bbox": [0, 0, 1, 1],
    }


def _uncompressed_rle(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths of the column-major flattening, starting with zeros."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0, *runs]
