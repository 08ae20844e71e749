"""Supports of several named classes from the command line: --class, --supports DIR, --support-labels."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.custom import is_image, scan_class
from ..errors import InputError
from ..paths import user_path
from ..processing.images import load_image, open_image_file
from ..processing.labels import check_class_names, read_label_image
from ..processing.masks import IGNORE_INDEX, as_binary_mask

ClassFiles = dict[str, tuple[list[Image.Image], list[np.ndarray], list[str]]]
"""class name -> (support images, binary masks, a label per mask for messages)."""


def add_class_options(group: argparse._MutuallyExclusiveGroup) -> None:
    """--class, --supports, --support-labels into the group that also holds --support."""
    group.add_argument(
        "--class", dest="classes", nargs=3, action="append", metavar=("NAME", "IMG", "MASK"),
        help="a support image and its mask for the class NAME; repeat for more classes, "
        "repeat a NAME for more shots of it (writes label maps)",
    )
    group.add_argument(
        "--supports", metavar="DIR",
        help="one sub-folder per class (folder name = class name) holding images and their masks "
        "(<name>.png or <name>_mask.png beside <name>.jpg)",
    )
    group.add_argument(
        "--support-labels", nargs=2, action="append", metavar=("IMG", "LABELS"),
        help="a support image and its label image (palette index or gray value = label, 255 = ignore); "
        "repeat for more shots; needs --names",
    )


def add_names_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--names", metavar="FILE",
        help="with --support-labels: a text file naming label 1 on its first line, label 2 on the second, ...",
    )


def read_classes(args: argparse.Namespace) -> ClassFiles | None:
    """The classes given by --class, --supports or --support-labels (None for a binary --support run).

    Every file is read and checked here, before any output is written.
    """
    if args.names and not args.support_labels:
        raise InputError("--names: only used with --support-labels")
    if args.classes:
        return _from_class_flags(args.classes)
    if args.supports:
        return _from_folder(user_path(args.supports))
    if args.support_labels:
        if not args.names:
            raise InputError("--support-labels: needs --names FILE naming the labels")
        return _from_label_images(args.support_labels, user_path(args.names))
    return None


def _from_class_flags(triples: list[list[str]]) -> ClassFiles:
    check_class_names(list(dict.fromkeys(name for name, _, _ in triples)), "--class")
    classes: ClassFiles = {}
    for name, image, mask in triples:
        images, masks, sources = classes.setdefault(name, ([], [], []))
        images.append(load_image(image))
        masks.append(as_binary_mask(open_image_file(mask), mask))
        sources.append(mask)
    return classes


def _from_folder(root: Path) -> ClassFiles:
    if not root.is_dir():
        raise InputError(f"{root}: no such folder (--supports wants one sub-folder per class)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"{root}: no class sub-folders (--supports wants one sub-folder per class)")
    check_class_names([folder.name for folder in folders], str(root))
    classes: ClassFiles = {}
    for folder in folders:
        pairs = scan_class(folder, folder)
        if not pairs:
            stray = [p.name for p in folder.iterdir() if is_image(p)]
            raise InputError(f"{folder}: no support images with masks" + (f" (found only {', '.join(sorted(stray))})" if stray else ""))
        classes[folder.name] = (
            [load_image(image) for image, _ in pairs.values()],
            [as_binary_mask(open_image_file(mask), str(mask)) for _, mask in pairs.values()],
            [str(mask) for _, mask in pairs.values()],
        )
    return classes


def read_names(path: Path) -> list[str]:
    """Class names, one a line (line i names label i); `InputError` for unreadable files or blank lines."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: a byte-order mark is not part of label 1's name
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read names ({getattr(error, 'strerror', None) or error})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise InputError(f"{path}: line {number} is blank (line i names label i)")
    check_class_names(lines, str(path))
    return lines


def _from_label_images(pairs: list[list[str]], names_file: Path) -> ClassFiles:
    names = read_names(names_file)
    classes: ClassFiles = {name: ([], [], []) for name in names}
    for image_path, labels_path in pairs:
        image = load_image(image_path)
        labels = read_label_image(open_image_file(labels_path), labels_path)
        if labels.shape != (image.height, image.width):
            raise InputError(f"{labels_path}: label image is {labels.shape[1]}x{labels.shape[0]} but {image_path} is {image.width}x{image.height}")
        unnamed = sorted(int(v) for v in np.unique(labels) if v not in (0, IGNORE_INDEX) and v > len(names))
        if unnamed:
            raise InputError(f"{labels_path}: label(s) {', '.join(map(str, unnamed))} have no name in {names_file} ({len(names)} names)")
        for index, name in enumerate(names, 1):
            images, masks, sources = classes[name]
            images.append(image)
            masks.append(labels == index)
            sources.append(f"{labels_path} label {index}")
    return classes
