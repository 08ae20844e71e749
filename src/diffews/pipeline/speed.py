"""Inference speed options: memory layout, attention kernels, autocast, `torch.compile`, static shapes.

All default to off, which is the reference path. Each keeps the maths of the method; what may
change is rounding (kernel choice, reduced-precision autocast), bounded by the tests.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..modeling import DiffewSModel
from ..modeling.config import TORCH_DTYPES
from ..modeling.kernels import attention_kernel, check_sdpa_kernel

AUTOCAST_DTYPES = {name: TORCH_DTYPES[name] for name in ("float16", "bfloat16")}


@dataclass(frozen=True)
class SpeedOptions:
    """How a `DiffewSPipeline` runs its model; the defaults are the plain reference path.

    Attributes:
        channels_last: convolution activations and weights in NHWC layout (faster convolutions
            on GPUs with tensor cores).
        sdpa_backend: force one scaled-dot-product-attention kernel (a name of
            `diffews.modeling.kernels.SDPA_KERNELS`: ``"flash"``, ``"efficient"``, ``"cudnn"``,
            ``"math"``); None (or ``"auto"``) lets torch choose.
        autocast: run the model under ``torch.autocast`` with this dtype (``"float16"`` or
            ``"bfloat16"``), weights kept in their dtype; None: no autocast.
        compile: compile the UNet and the VAE encoder/decoder with `torch.compile` (in place, so
            state-dict keys and saving are unchanged).
        compile_mode: `torch.compile` mode, e.g. ``"reduce-overhead"`` (CUDA graphs) or ``"max-autotune"``.
        compile_backend: `torch.compile` backend (``"inductor"``; ``"eager"`` only traces).
        static_batch: pad a short last batch of queries to the full batch size so every model
            call sees the same shapes (no recompilation, CUDA-graph friendly); the padding's
            outputs are dropped.
    """

    channels_last: bool = False
    sdpa_backend: str | None = None
    autocast: str | None = None
    compile: bool = False
    compile_mode: str | None = None
    compile_backend: str = "inductor"
    static_batch: bool = False

    def __post_init__(self) -> None:
        check_sdpa_kernel(self.sdpa_backend)
        if self.autocast is not None and self.autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast must be one of {', '.join(AUTOCAST_DTYPES)}, got {self.autocast!r}")

    def apply(self, model: DiffewSModel) -> None:
        """Change `model` in place: memory layout and compilation (irreversible for this model)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.compile:
            for module in (model.unet, model.vae.encoder, model.vae.decoder):
                module.compile(mode=self.compile_mode, backend=self.compile_backend)

    def context(self, device: torch.device) -> contextlib.AbstractContextManager:
        """Context to run model calls under: the chosen attention kernel and autocast."""
        stack = contextlib.ExitStack()
        stack.enter_context(attention_kernel(self.sdpa_backend))
        if self.autocast is not None:
            stack.enter_context(torch.autocast(device.type, dtype=AUTOCAST_DTYPES[self.autocast]))
        return stack

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Image batch ``(N, 3, H, W)`` in the layout the model expects."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images
