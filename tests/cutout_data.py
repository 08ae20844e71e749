"""Tiny cut-outs and backgrounds for the composite tests: opaque rectangles, so footprints are exact boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("apple", "boat", "cup", "drum", "egg", "fan", "go-left", "go-right")
SOURCES = ("ink", "pastel", "neon")


def write_cutouts(root: Path, classes=CLASSES, sources=SOURCES) -> Path:
    """``root/<class>/<source>__<class>.png``: a fully opaque rectangle with a class- and source-specific colour and shape."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for s, source in enumerate(sources):
            height, width = 10 + 3 * c, 24 - 2 * c + s
            pixels = np.zeros((height, width, 4), np.uint8)
            pixels[..., :3] = (40 * c % 256, 90 * s % 256, 200 - 20 * c)
            pixels[..., 3] = 255
            Image.fromarray(pixels, "RGBA").save(root / name / f"{source}__{name}.png")
    return root


def write_backgrounds(root: Path, count: int = 2) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / f"bg{index}.png")
    return root


def tree_files(root: Path) -> dict[str, bytes]:
    """Every file under `root` by its relative path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def error_line(capsys) -> str:
    """The one error line a failed command printed (progress bars may precede it on stderr)."""
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("error: ") == 1
    line = err.rstrip("\n").split("\n")[-1].split("\r")[-1]
    assert line.startswith("error: ")
    return line
