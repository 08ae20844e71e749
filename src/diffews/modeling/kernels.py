"""Scaled-dot-product-attention kernels, by name: the one list inference and training choose from."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

from torch.nn.attention import SDPBackend, sdpa_kernel

from ..errors import InputError

SDPA_KERNELS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}
"""Kernel name -> torch backend; ``"auto"`` (or None) leaves the choice to torch."""

SdpaKernelChoice = Literal[("auto", *SDPA_KERNELS)]  # type: ignore[valid-type]
"""``"auto"`` or a name of `SDPA_KERNELS`, for typed configs."""

_NO_KERNEL = ("No viable backend for scaled_dot_product_attention", "No available kernel")
"""Parts of torch's errors when no enabled SDPA kernel can run a call."""


def check_sdpa_kernel(name: str | None) -> None:
    """Raise `ValueError` unless `name` is None, ``"auto"`` or one of `SDPA_KERNELS`."""
    if name not in (None, "auto", *SDPA_KERNELS):
        raise ValueError(f"sdpa_backend must be one of auto, {', '.join(SDPA_KERNELS)}, got {name!r}")


@contextlib.contextmanager
def attention_kernel(name: str | None) -> Iterator[None]:
    """Context under which attention uses kernel `name` (None or ``"auto"``: torch's choice).

    Raises:
        InputError: the forced kernel cannot run an attention of the block on this device, dtype
            or shape (torch's "no viable backend" error, as one line naming the option).
    """
    check_sdpa_kernel(name)
    if name in (None, "auto"):
        yield
        return
    try:
        with sdpa_kernel(SDPA_KERNELS[name]):
            yield
    except RuntimeError as error:
        if not any(marker in str(error) for marker in _NO_KERNEL):
            raise
        raise InputError(f"sdpa_backend {name!r} cannot run this model's attention here (on this device, dtype or head size); use auto") from None
