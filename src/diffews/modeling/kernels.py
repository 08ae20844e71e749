"""Scaled-dot-product-attention kernels, by name: the one list inference and training choose from."""

from __future__ import annotations

import contextlib
from typing import Literal

from torch.nn.attention import SDPBackend, sdpa_kernel

SDPA_KERNELS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}
"""Kernel name -> torch backend; ``"auto"`` (or None) leaves the choice to torch."""

SdpaKernelChoice = Literal[("auto", *SDPA_KERNELS)]  # type: ignore[valid-type]
"""``"auto"`` or a name of `SDPA_KERNELS`, for typed configs."""


def check_sdpa_kernel(name: str | None) -> None:
    """Raise `ValueError` unless `name` is None, ``"auto"`` or one of `SDPA_KERNELS`."""
    if name not in (None, "auto", *SDPA_KERNELS):
        raise ValueError(f"sdpa_backend must be one of auto, {', '.join(SDPA_KERNELS)}, got {name!r}")


def attention_kernel(name: str | None) -> contextlib.AbstractContextManager:
    """Context under which attention uses kernel `name` (None or ``"auto"``: torch's choice)."""
    check_sdpa_kernel(name)
    return contextlib.nullcontext() if name in (None, "auto") else sdpa_kernel(SDPA_KERNELS[name])
