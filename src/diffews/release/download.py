"""`diffews download`: fetch one released model with the hubs' own clients and convert it, once, into the cache.

The authors' UNet comes from their ModelScope repository through the ``modelscope`` package (optional
extra ``diffews[modelscope]``), fetched into ``$DIFFEWS_HOME/downloads/`` (files already there are used as
they are: that is also where to put them by hand); the base comes from huggingface_hub's cache. Both
libraries show their own progress bars and resume interrupted downloads. The conversion is written to a
temporary folder and renamed into ``$DIFFEWS_HOME/models/<name>`` when complete, under a file lock, so a
second process waits for the first instead of converting again, and a half-written model is never used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import InputError, first_line
from ..home import HOME_ENV, diffews_home
from ..io import is_empty_folder, refuse_link
from ..modeling.convert import (
    check_unet_weights_allowed, convert_authors_checkpoint, converted_model_card, is_model_folder, resolve_base, save_new_folder,
)
from ..modeling.diffews_model import read_model_config
from ..modeling.prompt import PROMPT_AUTHORS_EVAL
from ..modeling.weights import SD21_HUB_ID
from .catalog import AUTHORS_REPOSITORY, Release, models_dir, release
from .layout import scan_clone, select_models, unet_folder


def authors_download_dir() -> Path:
    """Where the authors' files are fetched to (their repository's layout): ``$DIFFEWS_HOME/downloads/zzzmmz--Diffews``."""
    return diffews_home() / "downloads" / AUTHORS_REPOSITORY.replace("/", "--")


def fetch_authors_files(folder: str, local_dir: Path) -> None:
    """Download the files of the authors' model folder `folder` (its ``unet/``) into `local_dir`, keeping
    their repository's layout, with modelscope (progress bars; files already complete are not fetched again).

    Raises:
        InputError: modelscope is not installed, or the download failed (offline, refused).
    """
    try:
        from modelscope import snapshot_download
    except ImportError:
        raise InputError(
            f"the authors' weights come from ModelScope ({AUTHORS_REPOSITORY}) and the modelscope package is not installed; "
            f"pip install 'diffews[modelscope]', or {_by_hand(folder, local_dir)}"
        ) from None
    try:
        snapshot_download(model_id=AUTHORS_REPOSITORY, local_dir=str(local_dir), allow_patterns=[f"{folder}/unet/*", f"*/{folder}/unet/*"])
    except Exception as error:  # network, refusal, missing repository: all mean "place the files by hand"
        raise InputError(
            f"downloading {folder}/unet/ of {AUTHORS_REPOSITORY} from ModelScope failed ({type(error).__name__}: "
            f"{first_line(error)}); {_by_hand(folder, local_dir)}"
        ) from error


def download_model(
    name: str,
    base: str | Path = SD21_HUB_ID,
    authors: str | Path | None = None,
    report: Callable[[str], None] = print,
    prompt: str = PROMPT_AUTHORS_EVAL,
    allow_pickle: bool = False,
) -> Path:
    """The converted model folder of the release `name` in ``$DIFFEWS_HOME/models``, fetching and converting
    it first if needed (default conversion options but `prompt`).

    Args:
        name: ``incontext`` or ``coco-fold0`` … ``coco-fold3`` (or the authors' folder names).
        base: Stable Diffusion 2.1: hub id (default: the community mirror) or a local folder.
        authors: a clone of the authors' repository to take the UNet from instead of downloading it.
        report: called with progress lines.
        prompt: the empty-prompt embedding to store (`diffews.modeling.prompt.TEXT_PROMPTS`): the
            authors' evaluation's (default) or their training's (``"padded"``).
        allow_pickle: read the UNet if its weights are only a pickled ``.bin`` (see
            `diffews.modeling.convert.read_unet_weights`); otherwise that is an error.

    Raises:
        InputError: one line naming what failed (download, layout, conversion) and how to place the files
            by hand, or that the cache holds the model with the other prompt embedding.
    """
    chosen = release(name)
    target = models_dir() / chosen.name
    if is_model_folder(target):
        _check_prompt(target, prompt)
        report(f"{chosen.name}: already in {target}")
        return target
    clone_unet = _authors_unet(chosen, authors) if authors is not None else None  # a wrong clone: found before anything is created
    if clone_unet is not None:
        check_unet_weights_allowed(clone_unet, allow_pickle)
    try:
        models_dir().mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{models_dir()}: cannot create the model cache ({error.strerror or error}); set {HOME_ENV}") from None
    lock = FileLock(models_dir() / f".{chosen.name}.lock")  # kept: removing a lock file lets a third process in beside the holder
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            report(f"{chosen.name}: another diffews process is converting it (lock {lock.lock_file}); waiting")
            lock.acquire()
    except OSError as error:  # e.g. a lock file another user left, which this user cannot open
        raise InputError(
            f"{lock.lock_file}: cannot open the lock file ({error.strerror or error}); if no diffews download runs, "
            f"remove it, or set {HOME_ENV}"
        ) from None
    try:
        if is_model_folder(target):
            _check_prompt(target, prompt)
            report(f"{chosen.name}: converted by the other process, in {target}")
            return target
        _check_cache_entry(target)  # under the lock: no other download is filling it
        unet = clone_unet or _authors_unet(chosen, None)
        report(f"{chosen.name}: converting {unet} with the base {base}")
        model = convert_authors_checkpoint(unet, resolve_base(base), prompt=prompt, allow_pickle=allow_pickle)
        save_new_folder(model, target, card=converted_model_card(model))
    finally:
        lock.release()
    report(f"{chosen.name}: ready in {target}; use it with --model {chosen.name}")
    return target


def _check_cache_entry(target: Path) -> None:
    """`InputError` if `target`, the cache's place for a model not converted yet, holds anything else."""
    refuse_link(target)  # found now, not after the download and conversion
    if target.exists() and not is_empty_folder(target):
        raise InputError(
            f"{target}: holds files that are not a diffews model, where 'diffews download' keeps this one; move them, "
            f"or set {HOME_ENV} to another folder"
        )


def _check_prompt(folder: Path, prompt: str) -> None:
    """`InputError` unless the converted model in `folder` stores the `prompt` embedding."""
    stored = read_model_config(folder).prompt
    if stored != prompt:
        raise InputError(
            f"{folder} holds this model with the {stored!r} prompt embedding, not {prompt!r}; remove that folder to convert it "
            f"again, or convert the other one into a folder of its own: diffews convert --unet UNET --base BASE --prompt {prompt} --out DIR"
        )


def _authors_unet(chosen: Release, clone: str | Path | None) -> Path:
    """The authors' UNet folder of `chosen`: from `clone`, else from the download folder, fetching it if absent."""
    if clone is not None:
        return unet_folder(next(iter(select_models(scan_clone(clone), [chosen.folder], option="").values())))
    local_dir = authors_download_dir()
    found = _downloaded(local_dir, chosen.folder)
    if found is None or not _has_unet(found):
        fetch_authors_files(chosen.folder, local_dir)
        found = _downloaded(local_dir, chosen.folder)
    if found is None:
        raise InputError(
            f"{local_dir}: the download holds no {chosen.folder}/unet/; the repository's layout differs from what "
            f"diffews expects, {_by_hand(chosen.folder, local_dir)}"
        )
    return unet_folder(found)


def _downloaded(local_dir: Path, folder: str) -> Path | None:
    """The model folder `folder` inside the download folder, if it is there."""
    return scan_clone(local_dir).models.get(folder) if local_dir.is_dir() else None


def _has_unet(model: Path) -> bool:
    """Whether a complete-looking UNet is already in `model` (an interrupted download is fetched again)."""
    try:
        unet_folder(model)
    except InputError:
        return False
    return True


def _by_hand(folder: str, local_dir: Path) -> str:
    """How to place the authors' files by hand, as a clause of a one-line message."""
    return (
        f"clone {AUTHORS_REPOSITORY} from ModelScope with git-lfs and pass --authors CLONE, or put its "
        f"{folder}/unet/ folder (config.json + weights) under {local_dir}"
    )

