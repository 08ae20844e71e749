"""The authors' released DiffewS models, by the names diffews gives them, and where converted ones live."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..home import diffews_home
from ..modeling.convert import is_model_folder

AUTHORS_REPOSITORY = "zzzmmz/Diffews"
"""The authors' ModelScope git repository (git-lfs) with their fine-tuned UNets and base folder."""


@dataclass(frozen=True)
class Release:
    """One released model: its diffews name, the authors' folder name, and what it is for."""

    name: str
    folder: str
    use: str


RELEASES = {
    release.name: release
    for release in (
        Release("incontext", "incontext", "in-context model trained on all of COCO: for your own images and classes"),
        *(
            Release(f"coco-fold{fold}", f"coco_fold{fold}", f"strict few-shot COCO-20i, fold {fold}'s classes unseen: the paper's table")
            for fold in range(4)
        ),
    )
}
"""Every released model, by diffews name."""


def release(name: str) -> Release:
    """The release called `name` (a diffews name such as ``coco-fold0`` or the authors' ``coco_fold0``)."""
    for candidate in RELEASES.values():
        if name in (candidate.name, candidate.folder):
            return candidate
    raise InputError(f"{name}: not a released DiffewS model; the released ones are {', '.join(RELEASES)}")


def models_dir() -> Path:
    """Where `diffews download` puts converted models: ``$DIFFEWS_HOME/models``."""
    return diffews_home() / "models"


def downloaded_model(name: str) -> Path:
    """The converted model folder of the release `name`.

    Raises:
        InputError: it has not been downloaded (says which command does it).
    """
    folder = models_dir() / release(name).name
    if not is_model_folder(folder):
        raise InputError(f"{name}: not downloaded yet; run 'diffews download {release(name).name}' (it converts into {folder})")
    return folder
