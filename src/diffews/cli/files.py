"""Finding input images and writing outputs without leaving partial results behind."""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from PIL import Image

from ..errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def expand_image_paths(specs: Iterable[str]) -> list[Path]:
    """Files, folders (their image files, sorted) and glob patterns -> image paths, in order, deduplicated."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if glob.has_magic(spec):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True))
            files = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            if not files:
                raise InputError(f"{spec}: pattern matched no image files")
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise InputError(f"{path}: folder has no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        elif path.is_file():
            files = [path]
        else:
            raise InputError(f"{path}: no such file or folder")
        found.extend(files)
    return list(dict.fromkeys(found))


def output_stems(paths: list[Path]) -> list[str]:
    """Output name stem of each input; raises if two inputs would write the same outputs."""
    owners: dict[str, Path] = {}
    for path in paths:
        if path.stem in owners:
            raise InputError(f"{owners[path.stem]} and {path} would both write outputs named '{path.stem}_*'")
        owners[path.stem] = path
    return list(owners)


class OutputFolder:
    """Writes files atomically into a folder; on an error inside ``with``, removes everything it wrote.

    Each file is written to a temporary name and renamed into place, so a reader never sees a
    half-written file; if the run fails, the files of this run (and the folder, if this run made
    it and it is empty) are removed.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.written: list[Path] = []
        self._created = False

    def __enter__(self) -> OutputFolder:
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.path}: output folder is an existing file")
        try:
            self._created = not self.path.exists()
            self.path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.path):
                pass
        except OSError as error:
            raise InputError(f"{self.path}: cannot write to output folder ({error.strerror or error})") from None
        return self

    def save_image(self, image: Image.Image, name: str) -> Path:
        """Save `image` as PNG under `name`, atomically."""
        target = self.path / name
        handle, temporary = tempfile.mkstemp(dir=self.path, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                image.save(stream, format="PNG")
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.written.append(target)
        return target

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        if error is None:
            return
        for path in self.written:
            path.unlink(missing_ok=True)
        if self._created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()
