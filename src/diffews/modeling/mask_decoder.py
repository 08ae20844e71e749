"""A small mask decoder: mask latents straight to foreground probabilities, in place of the VAE decoder.

The SD VAE decoder reconstructs any image; DiffewS only ever decodes masks, white on black.
`MaskDecoder` is a few upsampling convolutions trained (`diffews.distillation`) to reproduce the
full decoder's probabilities, at a small fraction of its cost. Saved as one safetensors file whose
metadata holds its config and the IoU against the full decoder it was distilled from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ..errors import InputError, first_line
from ..io import check_parent_folders, missing_folders, remove_created_folders
from ..paths import user_path
from .weights import read_safetensors_file, save_safetensors

FORMAT = "diffews-mask-decoder"


@dataclass(frozen=True)
class MaskDecoderConfig:
    """Shape of a `MaskDecoder`.

    Attributes:
        latent_channels: channels of the VAE latents (4 for SD).
        widths: channels of each x2 upsampling stage; ``len(widths)`` stages give the VAE's
            downsampling factor ``2 ** len(widths)`` (8 for SD: three stages).
        scaling_factor: the VAE's latent scaling factor; inputs are divided by it, as the VAE does.
    """

    latent_channels: int = 4
    widths: tuple[int, ...] = (128, 64, 32)
    scaling_factor: float = 0.18215

    @property
    def upscale(self) -> int:
        return 2 ** len(self.widths)


class MaskDecoder(nn.Module):
    """Mask latents ``(B, C, h, w)`` (scaled like the VAE's) -> probabilities ``(B, 1, h * 2^S, w * 2^S)`` in [0, 1]."""

    def __init__(self, config: MaskDecoderConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else MaskDecoderConfig()
        widths = self.config.widths
        self.conv_in = nn.Conv2d(self.config.latent_channels, widths[0], 3, padding=1)
        stages = []
        for width_in, width_out in zip(widths, widths[1:] + widths[-1:]):
            stages.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(width_in, width_out, 3, padding=1),
                    nn.SiLU(),
                    nn.Conv2d(width_out, width_out, 3, padding=1),
                    nn.SiLU(),
                )
            )
        self.stages = nn.Sequential(*stages)
        self.conv_out = nn.Conv2d(widths[-1], 1, 3, padding=1)

    def logits(self, mask_latents: torch.Tensor) -> torch.Tensor:
        """Foreground logits ``(B, 1, H, W)``."""
        hidden = self.conv_in(mask_latents.to(self.conv_in.weight.dtype) / self.config.scaling_factor)
        return self.conv_out(self.stages(torch.nn.functional.silu(hidden)))

    def forward(self, mask_latents: torch.Tensor) -> torch.Tensor:
        """Foreground probabilities ``(B, 1, H, W)`` in [0, 1], float32."""
        return torch.sigmoid(self.logits(mask_latents).float())


def save_mask_decoder(decoder: MaskDecoder, path: str | Path, metrics: dict[str, float] | None = None) -> Path:
    """Write `decoder` as one safetensors file (atomically); its config and `metrics` go into the metadata.
    If the write fails or is interrupted, the folders it created for the file are removed."""
    path = Path(path)
    created = missing_folders(path.parent)
    metadata = {"format": FORMAT, "config": json.dumps(asdict(decoder.config)), "metrics": json.dumps(metrics or {})}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_safetensors(decoder.state_dict(), path, metadata)
    except BaseException:
        remove_created_folders(created)
        raise


def check_mask_decoder_target(path: str | Path) -> None:
    """`InputError` unless `save_mask_decoder` may write `path`: a new ``.safetensors`` file in a folder
    (or a folder to be created), or a mask decoder an earlier run wrote. Never anything else: a run
    does not replace files it did not create."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InputError(f"{path}: the output must be a .safetensors file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; name a .safetensors file to write")
    check_parent_folders(path)
    if path.exists() or path.is_symlink():
        try:
            with safe_open(str(path), framework="pt") as handle:  # the header only: never the tensors of a user's file
                written_by_diffews = (handle.metadata() or {}).get("format") == FORMAT
        except (SafetensorError, OSError):
            written_by_diffews = False
        if not written_by_diffews:
            raise InputError(f"{path}: already exists and is not a mask decoder written by diffews; choose another --out or move the file")


def load_mask_decoder(path: str | Path) -> tuple[MaskDecoder, dict[str, float]]:
    """Read a file written by `save_mask_decoder`; returns the decoder (eval mode) and its metrics.

    Raises:
        InputError: missing or unreadable file, or not a DiffewS mask decoder.
    """
    path = user_path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such mask decoder file")
    tensors, metadata = read_safetensors_file(path)
    if metadata.get("format") != FORMAT:
        raise InputError(f"{path}: not a DiffewS mask decoder (written by 'diffews distill-decoder')")
    try:
        values = json.loads(metadata["config"])
        decoder = MaskDecoder(MaskDecoderConfig(**{**values, "widths": tuple(values["widths"])}))
        metrics = json.loads(metadata.get("metrics", "{}"))
    except (LookupError, TypeError, ValueError, RuntimeError) as error:  # json errors are ValueErrors
        detail = f"no {error} entry" if isinstance(error, KeyError) else first_line(error)
        raise InputError(f"{path}: damaged mask decoder metadata ({detail})") from None
    try:
        decoder.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise InputError(f"{path}: weights do not match the stored config ({first_line(error, lines=2)})") from None
    return decoder.eval(), metrics
