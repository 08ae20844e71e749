"""Paths as users write them: a leading ``~`` or ``~user`` expanded, an unknown user a one-line error."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError


def user_path(path: str | os.PathLike[str]) -> Path:
    """`path` with a leading ``~`` / ``~user`` expanded (`Path.expanduser`).

    Raises:
        InputError: ``~user`` names no user, or ``~`` has no home folder to stand for.
    """
    try:
        return Path(path).expanduser()
    except RuntimeError:  # pathlib's "Could not determine home directory."
        raise InputError(f"{path}: cannot expand '~' (no such user, or no home folder)") from None
