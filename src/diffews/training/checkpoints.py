"""Resumable training checkpoints: safetensors only, written atomically, newest K kept.

A checkpoint is a folder ``<output_dir>/checkpoints/step-<8 digits>`` that appears in one
``rename`` of a fully written temporary folder (``.step-...tmp``), so a process killed at any
moment leaves either a complete checkpoint or a temporary folder that `latest_checkpoint`
never picks up (and the next save removes).

A training checkpoint holds a `TrainState`'s ``state_dict`` in safetensors files: the UNet
weights as they are (``unet.safetensors``), and nested state (EMA; optimizer, scheduler and
grad scaler; every process's RNG states) as one file each: the tensors as entries, the structure
as JSON in the file's metadata. ``trainer_state.json`` (step, processes, latest validation scores)
is written last, so a folder without it is never resumed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..io import TEMP_SUFFIX, WRITE_FAILURES, atomic_write, check_writable, remove, temporary_path, write_failure
from ..modeling.weights import read_json, read_safetensors, read_safetensors_file, save_safetensors
from ..paths import user_path

CHECKPOINTS = "checkpoints"
LOGS = "logs"
PREFIX = "step-"
STATE_NAME = "trainer_state.json"
UNET_FILE, EMA_FILE, OPTIM_FILE, RNG_FILE = "unet.safetensors", "ema.safetensors", "optimizer.safetensors", "rng.safetensors"
CONFIG_FILE = "config.yaml"
STRUCTURE_KEY = "structure"
_TENSOR, _ITEMS, _TUPLE = "__tensor__", "__items__", "__tuple__"


def save_nested(state: Any, path: Path) -> None:
    """Write nested dicts/lists/tuples of tensors and JSON scalars to one safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _flatten(state, tensors)
    save_safetensors(tensors, path, metadata={STRUCTURE_KEY: json.dumps(structure)})


def load_nested(path: Path, device: torch.device | str = "cpu") -> Any:
    """Inverse of `save_nested`: the same structure, dict key types (int keys too) and tensors."""
    tensors, metadata = read_safetensors_file(path, device)
    if STRUCTURE_KEY not in metadata:
        raise InputError(f"{path}: not a diffews checkpoint file (no {STRUCTURE_KEY} metadata)")
    try:
        return _unflatten(json.loads(metadata[STRUCTURE_KEY]), tensors)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise InputError(f"{path}: damaged diffews checkpoint file (its {STRUCTURE_KEY} metadata does not match its tensors)") from None


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
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX) :].isdecimal()]
    return sorted((p for p in found if (p / STATE_NAME).is_file()), key=_step)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """`--resume` value -> checkpoint folder: None, 'latest' (None if the run has none yet) or a folder.

    A named folder must leave `output_dir` one line of checkpoints: it is one of the run's own,
    with none newer (those belong to the run being abandoned: a later ``--resume latest`` would
    pick them up), or `output_dir` holds no checkpoints yet.
    """
    if resume is None:
        return None
    if resume == "latest":
        return latest_checkpoint(output_dir)
    path = user_path(resume)
    if not (path / STATE_NAME).is_file():
        raise InputError(f"{path}: not a complete diffews training checkpoint (no {STATE_NAME})")
    existing = complete_checkpoints(output_dir)
    own = [p for p in existing if p.resolve() == path.resolve()]
    if existing and not own:
        raise InputError(
            f"{output_dir}: already holds checkpoints of another run; resume from {path} into another output_dir"
        )
    newer = [p.name for p in existing if _step(p) > _step(own[0])]
    if newer:
        raise InputError(
            f"{path}: {Path(output_dir) / CHECKPOINTS} also holds newer checkpoints ({', '.join(newer)}) that continuing "
            "from it would mix with this run's; move them out of that folder or resume into another output_dir"
        )
    return path


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name[len(PREFIX) :])


def write_checkpoint(output_dir: str | Path, step: int, write: Callable[[Path], None], keep: int) -> Path:
    """Create checkpoint `step` atomically (`diffews.io.atomic_write`, flushed to disk): `write(folder)`
    fills a temporary folder, which is then renamed into place (re-saving a step after a resume
    replaces the old copy); afterwards only the newest `keep` checkpoints remain."""
    root = Path(output_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".{PREFIX}*{TEMP_SUFFIX}"):
        remove(stale)
    target = root / checkpoint_name(step)
    with atomic_write(target, folder=True, sync=True) as staged:
        write(staged)
    for old in complete_checkpoints(output_dir)[:-keep]:  # renamed first: an interrupted removal leaves a stale temporary
        remove(old.rename(temporary_path(old)))  # folder (removed by the next write), never a half-deleted checkpoint
    return target


def save_train_state(output_dir: str | Path, state: dict[str, Any], config_yaml: str, keep: int) -> Path:
    """Write a `TrainState.state_dict` (with the run's config) as checkpoint ``state["step"]`` of
    `output_dir`, atomically (see `write_checkpoint`); returns the checkpoint folder.

    Raises:
        InputError: a file could not be written (full disk, permissions): one line naming it; no
            part of the checkpoint is left and the older checkpoints are kept.
    """
    final = Path(output_dir) / CHECKPOINTS / checkpoint_name(state["step"])
    training = {"optimizer": state["optimizer"], "scheduler": state["scheduler"], "scaler": state["scaler"]}
    summary = {"step": state["step"], "num_processes": state["num_processes"], "validation": state["metrics"]}
    files: list[tuple[str, Callable[[Path], None]]] = [
        (UNET_FILE, lambda path: save_safetensors(state["unet"], path)),
        (OPTIM_FILE, lambda path: save_nested(training, path)),
        (RNG_FILE, lambda path: save_nested(state["rng"], path)),
        (CONFIG_FILE, lambda path: path.write_text(config_yaml)),
        (STATE_NAME, lambda path: write_json(summary, path)),
    ]
    if state["ema"] is not None:
        files.insert(1, (EMA_FILE, lambda path: save_nested(state["ema"], path)))

    def write(folder: Path) -> None:
        for name, save in files:
            try:
                save(folder / name)
            except WRITE_FAILURES as error:
                raise InputError(f"{final / name}: cannot write ({write_failure(error)}); checkpoint {final.name} was not saved") from None

    try:
        return write_checkpoint(output_dir, state["step"], write, keep)
    except OSError as error:  # creating or renaming the folder
        raise InputError(f"{error.filename or final}: cannot write checkpoint ({error.strerror or error})") from None


def load_train_state(folder: Path) -> dict[str, Any]:
    """Inverse of `save_train_state`: the `TrainState.state_dict` stored in `folder` (``ema`` None
    when the checkpoint has none); one-line `InputError` for a damaged file."""
    summary = read_state_summary(folder)
    state = {"step": summary["step"], "num_processes": summary["num_processes"], "metrics": summary.get("validation")}
    state["unet"] = read_safetensors(folder / UNET_FILE)
    optimizer = load_nested(folder / OPTIM_FILE)
    if not isinstance(optimizer, dict):
        raise InputError(f"{folder / OPTIM_FILE}: damaged diffews checkpoint file (not an optimizer state)")
    state.update(optimizer)
    state["ema"] = load_nested(folder / EMA_FILE) if (folder / EMA_FILE).is_file() else None
    state["rng"] = load_nested(folder / RNG_FILE)
    return state


def read_state_summary(folder: Path) -> dict[str, Any]:
    """A checkpoint's ``trainer_state.json``: ``step`` and ``num_processes`` (integers), ``validation``;
    one-line `InputError` naming the file when it is damaged."""
    summary = read_json(folder / STATE_NAME)
    if not (isinstance(summary, dict) and all(type(summary.get(key)) is int for key in ("step", "num_processes"))):
        raise InputError(f"{folder / STATE_NAME}: damaged, it does not give the step and process count")
    return summary


def check_output_dir(output_dir: str | Path) -> None:
    """`InputError` unless `output_dir` (and its ``checkpoints/`` and ``logs/``, if there) can be written, or, if it
    does not exist yet, can be created; checked before training starts, creating nothing."""
    path = user_path(output_dir)
    advice = "choose another output_dir"
    check_writable(path, advice)
    for folder in (path / CHECKPOINTS, path / LOGS):
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder}: is a file, where the run keeps its {folder.name}; {advice}")
        if folder.is_dir():
            check_writable(folder, advice)


def write_json(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
