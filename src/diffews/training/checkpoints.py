"""Resumable training checkpoints: safetensors only, written atomically, newest K kept.

A checkpoint is a folder ``<output_dir>/checkpoints/step-<8 digits>`` that appears in one
``rename`` of a fully written temporary folder (``.tmp-step-...``), so a process killed at any
moment leaves either a complete checkpoint or a temporary folder that `latest_checkpoint`
never picks up (and the next save removes).

Nested state (optimizer, scheduler, RNG and grad-scaler states) is stored as one safetensors
file: the tensors as entries, the structure as JSON in the file's metadata.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import InputError

CHECKPOINTS = "checkpoints"
PREFIX = "step-"
TEMP_PREFIX = ".tmp-"
STATE_NAME = "trainer_state.json"
STRUCTURE_KEY = "structure"
_TENSOR, _ITEMS, _TUPLE = "__tensor__", "__items__", "__tuple__"


def save_nested(state: Any, path: Path) -> None:
    """Write nested dicts/lists/tuples of tensors and JSON scalars to one safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _flatten(state, tensors)
    save_file(tensors, path, metadata={STRUCTURE_KEY: json.dumps(structure)})


def load_nested(path: Path, device: torch.device | str = "cpu") -> Any:
    """Inverse of `save_nested`: the same structure, dict key types (int keys too) and tensors."""
    with safe_open(path, framework="pt", device=str(device)) as handle:
        structure = json.loads(handle.metadata()[STRUCTURE_KEY])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    return _unflatten(structure, tensors)


def _flatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = value.detach().contiguous().cpu()
        return {_TENSOR: key}
    if isinstance(value, dict):
        return {_ITEMS: [[key, _flatten(item, tensors)] for key, item in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [_flatten(item, tensors) for item in value]
        return {_TUPLE: items} if isinstance(value, tuple) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint")


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_unflatten(item, tensors) for item in value]
    if isinstance(value, dict):
        if _TENSOR in value:
            return tensors[value[_TENSOR]]
        if _TUPLE in value:
            return tuple(_unflatten(item, tensors) for item in value[_TUPLE])
        return {key: _unflatten(item, tensors) for key, item in value[_ITEMS]}
    return value


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first (temporary folders are never listed)."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX) :].isdigit()]
    return sorted((p for p in found if (p / STATE_NAME).is_file()), key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """`--resume` value -> checkpoint folder: None, 'latest' (None if the run has none yet) or a folder."""
    if resume is None:
        return None
    if resume == "latest":
        return latest_checkpoint(output_dir)
    path = Path(resume).expanduser()
    if not (path / STATE_NAME).is_file():
        raise InputError(f"{path}: not a complete diffews training checkpoint (no {STATE_NAME})")
    return path


def write_checkpoint(output_dir: str | Path, step: int, write: Callable[[Path], None], keep: int) -> Path:
    """Create checkpoint `step` atomically: `write(folder)` fills a temporary folder, which is then
    renamed into place; afterwards only the newest `keep` checkpoints remain."""
    root = Path(output_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f"{TEMP_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    target = root / checkpoint_name(step)
    temporary = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{target.name}-", dir=root))
    try:
        write(temporary)
        _fsync_tree(temporary)
        if target.exists():  # re-saving a step (after a resume) replaces the old copy
            shutil.rmtree(target)
        os.rename(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _fsync_path(root)
    for old in complete_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def write_json(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            _fsync_path(path)
    _fsync_path(folder)


def _fsync_path(path: Path) -> None:
    """Flush a file or folder entry to disk (best effort where the platform cannot fsync folders)."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
