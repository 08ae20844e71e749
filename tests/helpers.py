"""Small synthetic inputs shared by the tests."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffews.io import temporary_path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
"""The read-only ../shared folder beside the repository (absent in a user's fresh clone)."""


def random_image(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def box_mask(height: int, width: int, top: float = 0.25, bottom: float = 0.75) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[int(top * height) : int(bottom * height), int(top * width) : int(bottom * width)] = True
    return mask


def random_batch(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Images in [-1, 1] of `shape`, reproducible."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator) * 2 - 1


def random_masks(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator) > 0.5).float()


def dead_writers_path(target: Path, suffix: str) -> Path:
    """A leftover name as a process of this host that has exited would have named it."""
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host, _, random = temporary_path(target, suffix).name[len(target.name) + 2 : -len(suffix)].split("-")
    return target.with_name(f".{target.name}.{host}-{exited.stdout.strip()}-{random}{suffix}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
