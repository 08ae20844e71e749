"""Label maps as a COCO annotation file (images, categories, annotations with RLE masks), via pycocotools.

Category i is class i of the label maps (ids 1..C, in label order). Each annotation is one class
of one image (or, with ``instances=True``, one 4-connected component of it) as an RLE mask with its
bbox ``[x, y, w, h]``, area and score (the class's mean probability over the annotation's pixels).
Annotations never overlap, so painting them back gives the label maps exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..io import SOFTWARE
from .labels import connected_components


def require_pycocotools():
    """The pycocotools mask module; `InputError` with the install command when it is missing."""
    try:
        from pycocotools import mask as coco_mask
    except ImportError:
        raise InputError("--format coco needs pycocotools: pip install 'diffews[data]'") from None
    return coco_mask


@dataclass
class CocoWriter:
    """Collects label maps one image at a time; `to_dict` gives the COCO file's content.

    Args:
        class_names: the C class names, label i = ``class_names[i - 1]``.
        instances: one annotation per connected component instead of one per class and image.
    """

    class_names: list[str]
    instances: bool = False
    images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)

    def add(self, file_name: str, labels: np.ndarray, probabilities: np.ndarray) -> None:
        """Add one image: its label map ``(H, W)`` and per-class probabilities ``(C, H, W)`` in [0, 1]."""
        coco_mask = require_pycocotools()
        image_id = len(self.images) + 1
        height, width = labels.shape
        self.images.append({"id": image_id, "file_name": file_name, "height": int(height), "width": int(width)})
        for label in np.unique(labels):
            if label == 0:
                continue
            region = labels == label
            parts, count = connected_components(region) if self.instances else (region.astype(np.int32), 1)
            for counts, score in zip(*_component_runs(parts, count, probabilities[label - 1])):
                rle = coco_mask.frPyObjects({"size": [int(height), int(width)], "counts": counts}, int(height), int(width))
                self.annotations.append({
                    "id": len(self.annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "segmentation": {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")},
                    "area": int(coco_mask.area(rle)),
                    "bbox": [float(v) for v in coco_mask.toBbox(rle)],
                    "iscrowd": 0,
                    "score": round(float(score), 6),
                })

    def to_dict(self) -> dict:
        """The COCO annotation file's content (JSON-ready)."""
        return {
            "info": {"description": f"{SOFTWARE} segment", "version": "1.0"},  # how a later run tells its own file
            "images": self.images,
            "categories": [{"id": i, "name": name, "supercategory": ""} for i, name in enumerate(self.class_names, 1)],
            "annotations": self.annotations,
        }


def _component_runs(parts: np.ndarray, count: int, probability: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    """Uncompressed COCO RLE counts (column-major runs, background first) of components 1..`count` of
    the label array `parts` ``(H, W)``, and each component's mean `probability`.

    Built from the components' own pixels (sorted once), never from a full-size mask per component, so
    thousands of specks cost about as much as one large region.
    """
    column_major = parts.T.ravel()  # COCO masks run down the columns: index x * H + y
    pixels = np.flatnonzero(column_major)
    ids = column_major[pixels]
    order = np.argsort(ids, kind="stable")  # stable: each component's pixels stay in column-major order
    pixels, ids = pixels[order], ids[order]
    bounds = np.searchsorted(ids, np.arange(1, count + 2))
    runs = []
    for part in range(count):
        own = pixels[bounds[part] : bounds[part + 1]]
        breaks = np.flatnonzero(np.diff(own) != 1) + 1
        starts, ends = own[np.r_[0, breaks]], own[np.r_[breaks - 1, len(own) - 1]] + 1
        counts = np.empty(2 * len(starts) + 1, dtype=np.int64)
        counts[0:-1:2] = starts - np.r_[0, ends[:-1]]  # background before each run
        counts[1::2] = ends - starts
        counts[-1] = column_major.size - ends[-1]  # background after the last run (none: no count, as pycocotools)
        runs.append(counts.tolist() if counts[-1] else counts[:-1].tolist())
    sums = np.bincount(ids, weights=probability.T.ravel()[pixels].astype(np.float64), minlength=count + 1)
    return runs, sums[1:] / np.diff(bounds)
