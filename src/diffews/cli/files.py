"""Finding input images and writing outputs without leaving partial results behind."""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from PIL import Image

from ..errors import InputError
from ..processing.images import IMAGE_SUFFIXES

MAX_PENDING_WRITES = 32
"""Writes queued on the writer thread before `save_image_later` waits (bounds memory held by queued images)."""



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

    `save_image_later` moves rendering and PNG encoding onto one writer thread, off the caller's
    critical path; leaving the ``with`` waits for it, and a failed write fails the run.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.written: list[Path] = []
        self._created = False
        self._writer: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

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

    def save_image_later(self, render: Callable[[], Image.Image], name: str) -> None:
        """Render an image and save it under `name` on the writer thread (see `save_image`)."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffews-writer")
        while len(self._pending) >= MAX_PENDING_WRITES:
            self._pending.pop(0).result()
        self._pending.append(self._writer.submit(lambda: self.save_image(render(), name)))

    def _finish_writes(self) -> None:
        """Wait for the writer thread; re-raise the first failed write."""
        if self._writer is None:
            return
        self._writer.shutdown(wait=True)
        self._writer = None
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        try:
            self._finish_writes()
        except BaseException:
            if error is None:
                self._remove_written()
                raise
        if error is not None:
            self._remove_written()

    def _remove_written(self) -> None:
        for path in self.written:
            path.unlink(missing_ok=True)
        if self._created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()
