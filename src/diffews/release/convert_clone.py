"""Convert every model of a clone of the authors' weights (or the chosen ones) into diffews folders."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import check_parent_folders, is_empty_folder, refuse_link
from ..modeling.convert import (
    check_unet_weights_allowed, convert_authors_checkpoint, converted_model_card, is_model_folder, resolve_base, save_new_folder,
)
from ..paths import user_path
from .layout import clone_base, scan_clone, select_models, unet_folder


def convert_clone(
    root: str | Path,
    out: str | Path,
    base: str | Path | None = None,
    variants: list[str] | None = None,
    overwrite: bool = False,
    report: Callable[[str], None] = print,
    **options: Any,
) -> dict[str, Path]:
    """Write one diffews model folder per model folder of the clone at `root`, to ``out/<model folder name>``.

    Every model's layout (``unet/`` with config and weights; pickled weights only with
    ``allow_pickle=True`` in `options`), every output place and the base are checked before anything is
    converted. An ``out/<name>`` holding a diffews model is skipped, or replaced with `overwrite`; an
    empty folder there is filled; anything else there is an error. Each model is written atomically;
    if a later one fails, the finished ones stay (a rerun skips them).

    Args:
        base: Stable Diffusion 2.1 (hub id or folder); default: the base folder inside the clone.
        variants: model folder names (or diffews names like ``coco-fold0``) to convert; default all.
        report: called with one progress line per model.
        options: passed to `convert_authors_checkpoint` for every model (e.g. ``config``).

    Returns:
        The output folder of every selected model, by name (converted or skipped).
    """
    clone = scan_clone(root)
    unets = {name: unet_folder(folder) for name, folder in select_models(clone, variants).items()}
    for unet in unets.values():
        check_unet_weights_allowed(unet, options.get("allow_pickle", False))
    out = user_path(out)
    targets = {name: out / name for name in unets}
    for target in targets.values():  # all checked before the first conversion
        check_parent_folders(target)
        if not is_model_folder(target):  # a link to a model is read, never written
            refuse_link(target)
        if target.exists() and not is_empty_folder(target) and not is_model_folder(target):
            raise InputError(f"{target}: exists and is not a diffews model folder; move it or choose another --out")
    todo = [name for name, target in targets.items() if overwrite or not is_model_folder(target)]
    base_root = resolve_base(base if base is not None else clone_base(clone)) if todo else None
    for index, (name, target) in enumerate(targets.items(), start=1):
        prefix = f"[{index}/{len(targets)}] {name}:"
        if name not in todo:
            report(f"{prefix} {target} holds a diffews model, skipped; --overwrite replaces it")
            continue
        start = time.perf_counter()
        model = convert_authors_checkpoint(unets[name], base_root, **options)
        save_new_folder(model, target, replace=overwrite, card=converted_model_card(model))
        report(f"{prefix} {unets[name]} -> {target} ({time.perf_counter() - start:.1f} s)")
    return targets
