"""Locating model folders and reading/writing weights, safetensors only."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import InputError

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"


def resolve_model_dir(name_or_path: str | Path, allow_patterns: list[str]) -> Path:
    """A local folder as is; otherwise a hub repository id, downloaded (only `allow_patterns`) to the cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise InputError(f"{path}: expected a model folder, found a file")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path), allow_patterns=allow_patterns))
    except Exception as error:  # every hub failure (offline, unknown id, auth) means the same to the user
        raise InputError(
            f"{name_or_path}: not a local folder, and downloading it as a hub repository failed "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no detail'})"
        ) from error


def require_subfolders(root: Path, names: list[str]) -> None:
    """Raise a one-line `InputError` naming every missing subfolder of `root`."""
    missing = [name for name in names if not (root / name).is_dir()]
    if missing:
        raise InputError(f"{root}: missing subfolder(s) {', '.join(n + '/' for n in missing)}")


def read_json(path: Path) -> dict:
    """Parse a JSON file, with a one-line error naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: cannot read JSON ({error})") from error


def read_safetensors(path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, on `device` (see `read_safetensors_file`)."""
    return read_safetensors_file(path, device)[0]


def read_safetensors_file(path: Path, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(every tensor on `device`, the string metadata) of a safetensors file.

    Raises:
        InputError: one line naming `path`, for a missing, truncated or otherwise unreadable file.
    """
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise InputError(_unreadable(path, error)) from None


def check_safetensors(folder: Path) -> None:
    """Check that every ``*.safetensors`` file in `folder` is complete (its header covers the file)
    before a third-party loader reads it, so a damaged file is a one-line `InputError` naming it."""
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            raise InputError(_unreadable(path, error)) from None


def _unreadable(path: Path, error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return f"{path}: weights file not found"
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"{path}: cannot read weights, the file is damaged or truncated ({detail}); download or write it again"


def load_safetensors_folder(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a diffusers weights folder: one safetensors file, or shards listed by an index."""
    single, index = folder / WEIGHTS_NAME, folder / WEIGHTS_INDEX_NAME
    if single.is_file():
        return read_safetensors(single)
    if index.is_file():
        shards = sorted(set(read_json(index)["weight_map"].values()))
        return {key: value for shard in shards for key, value in read_safetensors(folder / shard).items()}
    raise InputError(f"{folder}: no {WEIGHTS_NAME} (diffews reads safetensors weights only)")


def save_safetensors_folder(state_dict: dict[str, torch.Tensor], folder: Path) -> None:
    """Write `state_dict` as ``folder/diffusion_pytorch_model.safetensors``."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({key: value.detach().contiguous().cpu() for key, value in state_dict.items()}, folder / WEIGHTS_NAME)
