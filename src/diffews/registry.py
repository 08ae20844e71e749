"""Model names, resolved in one place: `load_model(name_or_path)`.

Every command, the app and `DiffewSPipeline.from_pretrained` get their model here. What
``name_or_path`` means, in order:

1. an existing local path: a DiffewS model folder (written by ``save_pretrained``);
2. a name registered in `MODELS`: ``diffews-icons-small`` (the built-in model, packaged with diffews:
   the default wherever no model is named), ``tiny-random`` (a tiny model with random weights that checks
   an installation), the authors' released models once ``diffews download`` has converted them
   (``incontext``, ``coco-fold0`` ... ``coco-fold3``), and whatever else is registered;
3. otherwise a hub repository id of a DiffewS model folder.

A new named model (a folder shipped inside the package, another release) is one `register` call
with a `NamedModel`, not a special case in the callers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .modeling import DiffewSModel
from .modeling.builtin import DEFAULT_MODEL, builtin_folder
from .paths import user_path
from .release.catalog import RELEASES, downloaded_model

logger = logging.getLogger("diffews")

TINY_RANDOM = "tiny-random"


@dataclass(frozen=True)
class NamedModel:
    """A model diffews knows by a short name.

    Attributes:
        name: what ``--model`` and `load_model` take.
        summary: one line saying what it is, for help texts.
        load: builds or reads the model (float32 on the CPU; `load_model` moves it); raises
            `InputError` saying how to get it when it is not available.
        warning: said whenever the model is used (its masks mean nothing, ...), or None.
    """

    name: str
    summary: str
    load: Callable[[], DiffewSModel]
    warning: str | None = None


MODELS: dict[str, NamedModel] = {}
"""Every registered name -> its `NamedModel`."""


def register(model: NamedModel) -> NamedModel:
    """Make `model` loadable by its name (replacing an earlier entry of that name); returns it."""
    MODELS[model.name] = model
    return model


def folder_model(name: str, summary: str, folder: Callable[[], Path]) -> NamedModel:
    """A `NamedModel` read from the DiffewS folder that ``folder()`` returns (called at load time)."""
    return NamedModel(name, summary, lambda: DiffewSModel.from_pretrained(folder()))


def named_model(name_or_path: str | Path) -> NamedModel | None:
    """The registered model `name_or_path` refers to, or None (an existing local path never refers to one)."""
    if user_path(name_or_path).exists():
        return None
    return MODELS.get(str(name_or_path))


def load_model(
    name_or_path: str | Path, torch_dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> DiffewSModel:
    """The DiffewS model `name_or_path` names (see the module docstring), on `device` in `torch_dtype`.

    Raises:
        InputError: one line saying what is missing or damaged (and, for a named model that is not
            available yet, how to get it).
    """
    named = named_model(name_or_path)
    if named is None:
        return DiffewSModel.from_pretrained(name_or_path, torch_dtype=torch_dtype, device=device)
    if named.warning:
        logger.warning("%s: %s", named.name, named.warning)
    return named.load().to(device=device, dtype=torch_dtype)


def _tiny_random() -> DiffewSModel:
    from ._testing import build_tiny_model

    return build_tiny_model()


register(
    NamedModel(
        TINY_RANDOM,
        "a tiny model with random weights that checks the installation",
        _tiny_random,
        warning="random weights, the masks are meaningless; this only checks that diffews runs. "
        "See the README for the weights a real run needs.",
    )
)
for _release in RELEASES.values():
    register(folder_model(_release.name, f"the authors' {_release.use}", lambda name=_release.name: downloaded_model(name)))
register(
    folder_model(
        DEFAULT_MODEL,
        "the built-in model, packaged with diffews: a small DiffewS trained on icons, never on photos",
        builtin_folder,
    )
)
