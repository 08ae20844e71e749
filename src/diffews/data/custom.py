"""Custom folders: one sub-folder per class, so users can evaluate or fine-tune on their own data.

Two layouts, under the root::

    <class>/<name>.jpg  with  <class>/<name>.png  or  <class>/<name>_mask.png    (masks beside)
    images/<class>/<name>.jpg  with  masks/<class>/<name>.png                    (parallel folders)

Any image suffix works for images (jpg, png, ...); masks are PNG and follow the binarisation rule
of `diffews.processing.masks` (white/bright = the class; palette index 255 = ignore). Classes are
numbered 1..N in name order. There are no folds: every class is used, whatever the split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..processing.images import IMAGE_SUFFIXES, check_mask_shape, open_image_file, shown_size
from ..processing.masks import IGNORE_INDEX, pil_mask_to_array
from .source import SPLITS as ALL_SPLITS
from .source import Benchmark, CheckItem, FewShotSplit, require_dir

NAME = "custom"
SPLITS = ALL_SPLITS  # no split lists: every split name means "all class folders"
MASK_SUFFIX = "_mask"
NO_SPLIT_LISTS = "custom folders have no split lists; every class folder is used (drop --splits)"


def find_mask(image: Path, mask_folder: Path) -> Path | None:
    """The mask of `image` in `mask_folder`: ``<stem>_mask.png``, else ``<stem>.png`` (unless that is the image)."""
    for candidate in (mask_folder / f"{image.stem}{MASK_SUFFIX}.png", mask_folder / f"{image.stem}.png"):
        if candidate.is_file() and candidate != image:
            return candidate
    return None


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def scan_class(image_folder: Path, mask_folder: Path) -> dict[str, tuple[Path, Path]]:
    """name stem -> (image, mask) of one class folder; `InputError` for an image without a mask."""
    files = sorted(p for p in image_folder.iterdir() if is_image(p))
    if image_folder == mask_folder:
        stems = {p.stem for p in files}
        for mask in files:
            image_stem = mask.stem.removesuffix(MASK_SUFFIX)
            if mask.suffix.lower() == ".png" and mask.stem.endswith(MASK_SUFFIX) and image_stem not in stems:
                raise InputError(f"{mask}: mask without an image (expected {image_stem}.<jpg, png, ...> beside it)")
        other_stems = {p.stem for p in files if p.suffix.lower() != ".png"}
        files = [p for p in files if not (p.suffix.lower() == ".png" and (p.stem.endswith(MASK_SUFFIX) or p.stem in other_stems))]
    found = {}
    for image in files:
        mask = find_mask(image, mask_folder)
        if mask is None:
            maybe_mask = " (if it is a mask, its image is missing)" if image_folder == mask_folder and image.suffix.lower() == ".png" else ""
            raise InputError(
                f"{image}: image without a mask (expected {mask_folder / (image.stem + '.png')} or "
                f"{mask_folder / (image.stem + MASK_SUFFIX + '.png')}){maybe_mask}"
            )
        found[image.stem] = (image, mask)
    return found


def read_target(path: Path, orient: bool) -> np.ndarray:
    """A mask file as ``(H, W)`` uint8 in {0, 1, 255}: the binarisation rule, palette index 255 = ignore.
    `orient`: apply its EXIF orientation (`open_image_file`)."""
    image = open_image_file(path, orient=orient)
    target = pil_mask_to_array(image, str(path)).astype(np.uint8)
    if image.mode == "P":
        target[np.asarray(image) == IGNORE_INDEX] = IGNORE_INDEX
    return target


class FolderSplit(FewShotSplit):
    """Classes as folders; image keys are ``"<class>/<name stem>"``."""

    def __init__(
        self, benchmark: str, split: str, image_root: Path, mask_root: Path, class_names: Sequence[str], keep: Callable[[str], bool] | None = None
    ) -> None:
        """`keep`: which image keys to use (default: all)."""
        names = {i + 1: name for i, name in enumerate(class_names)}
        self.files: dict[str, tuple[Path, Path]] = {}
        pairs = []
        for class_id, name in names.items():
            folder = require_dir(image_root / name, f"class {name!r} of {benchmark} {split} has no folder")
            for stem, paths in scan_class(folder, mask_root / name).items():
                key = f"{name}/{stem}"
                if keep is not None and not keep(key):
                    continue
                self.files[key] = paths
                pairs.append((key, class_id))
        super().__init__(benchmark, split, None, list(names), names, pairs)

    def image_path(self, key: str) -> Path:
        return self.files[key][0]

    def target(self, key: str, class_id: int) -> np.ndarray:
        return read_target(self.files[key][1], self.exif_orientation)


class PhotoFolderSplit(FolderSplit):
    """A custom-layout split: users' own photos, whose masks are drawn on the picture as a viewer shows it,
    so images and masks are read with their EXIF orientation applied (as `diffews segment` reads inputs);
    a mask that does not fit its picture is refused, as `diffews segment` refuses it."""

    exif_orientation = True
    strict_mask_shapes = True


def layout(root: Path) -> tuple[Path, Path]:
    """(image root, mask root): ``images/`` + ``masks/`` if both exist, else the root for both."""
    root = require_dir(Path(root), "give a folder with one sub-folder of images and masks per class")
    images, masks = root / "images", root / "masks"
    return (images, masks) if images.is_dir() and masks.is_dir() else (root, root)


def class_folders(image_root: Path) -> list[str]:
    return sorted(p.name for p in image_root.iterdir() if p.is_dir() and not p.name.startswith("."))


def open_split(root: Path, split: str, fold: int | None, splits: Path | None = None, trust_pickle: bool = False) -> FolderSplit:
    """Every class folder under `root` (custom folders have no folds or split lists)."""
    if splits is not None:
        raise InputError(NO_SPLIT_LISTS)
    image_root, mask_root = layout(root)
    names = class_folders(image_root)
    if not names:
        raise InputError(f"{image_root}: no class folders; expected <class>/<image>.jpg with masks (see 'Benchmark data' in the README)")
    return PhotoFolderSplit(NAME, split, image_root, mask_root, names)


def check(root: Path, splits: Path | None = None) -> list[CheckItem]:
    """What `diffews data check custom` reports (custom folders have no split lists)."""
    if splits is not None:
        raise InputError(NO_SPLIT_LISTS)
    image_root, mask_root = layout(root)
    items = []
    for name in class_folders(image_root):
        try:
            pairs = scan_class(image_root / name, mask_root / name)
            misfits = [problem for problem in map(_shape_problem, pairs.values()) if problem]
        except InputError as error:
            items.append(CheckItem(f"class {name}", 0, str(error)))
            continue
        problem = f"{len(misfits)} mask(s) that do not fit their images (first: {misfits[0]})" if misfits else None
        items.append(CheckItem(f"class {name}", len(pairs) - len(misfits), problem))
    return items or [CheckItem("class folders", 0, f"none under {image_root}")]


def _shape_problem(pair: tuple[Path, Path]) -> str | None:
    """Why a mask cannot cover its image as both are shown (evaluate and train refuse such a pair), or None."""
    image, mask = pair
    try:
        check_mask_shape(shown_size(mask), shown_size(image), str(mask))
    except InputError as error:
        return str(error)
    return None


BENCHMARK = Benchmark(NAME, "custom folders", SPLITS, 0, open_split, check, test_episodes=None)
