"""The on-disk layout of the authors' released weights, found and checked before anything is converted.

What diffews expects of a clone of their repository (``zzzmmz/Diffews``), and checks, because their
files could not be inspected when this was written:

- **Model folders** (their README puts them under ``weight/``): one per model, named ``incontext``,
  ``coco_fold0`` … ``coco_fold3``, each holding ``unet/``: the fine-tuned UNet as diffusers saves it
  (``config.json`` and ``diffusion_pytorch_model.safetensors`` or ``.bin``), either directly in ``unet/``
  or one level deeper in ``unet/unet/`` (their evaluation script loads ``<model>/unet`` with
  ``subfolder="unet"``, which reads both). Any folder holding ``unet/`` counts, whatever its name.
- **The base**: a folder holding ``vae/`` and ``text_encoder/`` (theirs is named
  ``stable-diffusion-2-1-ref8inchannels-tag4inchannels``): Stable Diffusion 2.1's VAE and text encoder.
  A folder with ``vae/`` and ``text_encoder/`` is a base even if it also holds ``unet/``.
- Folders are searched up to `MAX_DEPTH` levels below the clone; hidden ones (``.git``) are skipped, and
  the search does not descend into model or base folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..modeling.convert import PICKLE_NAME
from ..modeling.weights import SD21_HUB_ID, WEIGHTS_INDEX_NAME, WEIGHTS_NAME, check_not_lfs_pointer, check_safetensors
from ..paths import user_path
from .catalog import RELEASES

AUTHORS_BASE_FOLDER = "stable-diffusion-2-1-ref8inchannels-tag4inchannels"
MAX_DEPTH = 4
UNET_WEIGHTS = (WEIGHTS_NAME, WEIGHTS_INDEX_NAME, PICKLE_NAME)


@dataclass(frozen=True)
class AuthorsClone:
    """What a folder of the authors' weights holds: model folders by name, and base folders."""

    root: Path
    models: dict[str, Path]
    bases: tuple[Path, ...]


def scan_clone(root: str | Path) -> AuthorsClone:
    """Find the model folders (holding ``unet/``) and base folders (``vae/`` + ``text_encoder/``) under `root`.

    Raises:
        InputError: `root` is not a folder, two model folders share a name, or a folder named like one
            of the authors' models has no ``unet/``.
    """
    root = user_path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder (expected a clone of the authors' weights, {RELEASES['incontext'].folder}/ and the like)")
    models: dict[str, Path] = {}
    bases: list[Path] = []
    release_folders = {r.folder for r in RELEASES.values()}
    for folder, subfolders, _ in os.walk(root):
        here, names = Path(folder), set(subfolders)
        if {"vae", "text_encoder"} <= names:
            bases.append(here)
        elif "unet" in names:
            if here.name in models:
                raise InputError(f"{models[here.name]} and {here}: two model folders named {here.name}; pass the folder of one of them")
            models[here.name] = here
        elif here.name in release_folders:
            raise InputError(f"{here}: no unet/ folder; each of the authors' model folders holds unet/ (config.json + weights)")
        elif len(here.relative_to(root).parts) < MAX_DEPTH:
            subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
            continue
        subfolders.clear()  # a model or base folder, or deep enough: do not descend
    return AuthorsClone(root, dict(sorted(models.items())), tuple(bases))


def select_models(clone: AuthorsClone, names: list[str] | None, option: str = "--variant") -> dict[str, Path]:
    """The model folders to convert: all of them, or those named (by folder name or diffews name);
    `option` is the command-line option that named them, for the error message ("" for none).

    Raises:
        InputError: the clone has no model folder, or a named one is not there.
    """
    if not clone.models:
        raise InputError(
            f"{clone.root}: no model folders found (folders holding unet/, like the authors' weight/incontext/unet/) "
            f"within {MAX_DEPTH} levels"
        )
    if not names:
        return dict(clone.models)
    aliases = {r.name: r.folder for r in RELEASES.values()}
    chosen: dict[str, Path] = {}
    for name in names:
        folder = name if name in clone.models else aliases.get(name, name)
        if folder not in clone.models:
            named = f"{option} {name}" if option else name
            raise InputError(f"{named}: no model folder of that name in {clone.root} (found: {', '.join(clone.models)})")
        chosen[folder] = clone.models[folder]
    return chosen


def clone_base(clone: AuthorsClone) -> Path:
    """The base folder inside the clone: the only one, or the one with the authors' base folder name.

    Raises:
        InputError: none (pass --base), or several and none of them the authors' (choose with --base).
    """
    if len(clone.bases) == 1:
        return clone.bases[0]
    if not clone.bases:
        raise InputError(
            f"{clone.root}: no base folder inside (a folder with vae/ and text_encoder/, like the authors' "
            f"{AUTHORS_BASE_FOLDER}/) and no --base; pass --base {SD21_HUB_ID} or a local "
            "Stable Diffusion 2.1 folder"
        )
    theirs = [base for base in clone.bases if base.name == AUTHORS_BASE_FOLDER]
    if len(theirs) == 1:
        return theirs[0]
    raise InputError(f"{clone.root}: several base folders ({', '.join(str(b) for b in clone.bases)}); choose one with --base")


def unet_folder(model: Path) -> Path:
    """The folder holding the UNet's ``config.json`` and weights: ``model/unet`` or ``model/unet/unet``.

    Raises:
        InputError: neither holds a ``config.json``, the weights are missing, or they are git-lfs pointers.
    """
    for candidate in (model / "unet", model / "unet" / "unet"):
        if (candidate / "config.json").is_file():
            weights = [candidate / name for name in UNET_WEIGHTS if (candidate / name).is_file()]
            if not weights:
                raise InputError(f"{candidate}: config.json but no weights ({', '.join(UNET_WEIGHTS)})")
            if weights[0].name != WEIGHTS_INDEX_NAME:
                check_not_lfs_pointer(weights[0])
            check_safetensors(candidate)
            return candidate
    raise InputError(f"{model / 'unet'}: no config.json (nor in unet/unet/); expected the UNet as diffusers saves it")

