"""Build an output folder under a temporary name and move it into place only when complete.

A reader never sees half a dataset, and an error, Ctrl-C, SIGTERM or SIGHUP leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError


def require_new_folder(out: Path) -> None:
    """`InputError` unless `out` is absent (or an empty folder) and its parent can be written."""
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise InputError(f"{out}: already exists and is not an empty folder; choose a new output folder")
    parent = out.parent
    if not parent.is_dir():
        raise InputError(f"{parent}: folder not found; create it first or choose another output folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{parent}: cannot write here; choose another output folder")


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `out` to fill; on success it becomes `out`, on any failure it is removed.

    SIGTERM and SIGHUP are turned into KeyboardInterrupt for the duration, so they clean up too.
    """
    out = Path(out)
    require_new_folder(out)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700; the result should look like any folder made here
    try:
        with _signals_interrupt():
            yield staging
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
