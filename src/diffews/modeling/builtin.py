"""Models that ship inside the package.

``diffews-icons-small`` is a small DiffewS trained from scratch on this repository's icon benchmark
(fold 0 held out; docs/learning.md). Registered by that name in `diffews.registry`, it is the
default model of `DiffewSPipeline.from_pretrained`, ``diffews segment``, ``diffews evaluate`` and
``diffews app``. Its model card is ``models/diffews-icons-small/README.md`` inside the package. It
has never seen photographs: for real photos, use the authors' weights (``diffews download``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .config import CONFIG_NAME

MODELS_ROOT = Path(__file__).resolve().parents[1] / "models"
"""Where packaged model folders live (package data)."""
DEFAULT_MODEL = "diffews-icons-small"
"""The model used when none is named."""


def builtin_folder(name: str = DEFAULT_MODEL) -> Path:
    """The packaged folder of the built-in model `name`.

    Raises:
        InputError: its files are missing (a damaged installation).
    """
    folder = MODELS_ROOT / name
    if not (folder / CONFIG_NAME).is_file():
        raise InputError(f"{name}: the built-in model's files are missing from {folder}; reinstall diffews")
    return folder
