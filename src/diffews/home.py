"""Where diffews keeps what it downloads and converts.

One folder, ``$DIFFEWS_HOME`` (default ``$XDG_CACHE_HOME/diffews``, i.e. ``~/.cache/diffews``):

- ``models/<name>/``: models converted by ``diffews download`` (``--model <name>`` loads them);
- ``downloads/``: the authors' released files as fetched, kept so that an interrupted download resumes;
- ``splits/``: published split lists.

Hub libraries keep their own caches (huggingface_hub: ``$HF_HOME``; modelscope: ``$MODELSCOPE_CACHE``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError
from .paths import user_path

HOME_ENV = "DIFFEWS_HOME"


def diffews_home() -> Path:
    """``$DIFFEWS_HOME``, else ``$XDG_CACHE_HOME/diffews``, else ``~/.cache/diffews`` (not created here)."""
    for variable, below in ((HOME_ENV, ()), ("XDG_CACHE_HOME", ("diffews",))):
        if os.environ.get(variable):
            try:
                return user_path(os.environ[variable]).joinpath(*below)
            except InputError as error:
                raise InputError(f"${variable}: {error}") from None
    try:
        return Path.home() / ".cache" / "diffews"
    except RuntimeError:  # no HOME and no passwd entry for this user (some containers)
        raise InputError(f"no home folder to keep downloads in: set {HOME_ENV} (or XDG_CACHE_HOME)") from None
