"""DiffewS model settings, stored beside the weights as ``diffews_config.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

import torch

from ..processing.thresholds import check_threshold
from .oi2m import OI2M_TIMESTEP
from .prompt import PROMPT_MODES, PROMPT_PADDED

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""dtype names accepted by the command line, configs and benchmarks."""

CONFIG_NAME = "diffews_config.json"
"""The file of a model folder that holds its `DiffewSConfig` (what marks a folder as a DiffewS model)."""

MAX_RESOLUTION = 2048
"""Largest working resolution accepted (4x the authors' 512; latents of 256 x 256). Attention over
``(K + 1) x (R / 8)^2`` tokens grows with R^4, so larger values only end in out-of-memory errors."""

ThresholdMode = Literal["relative", "absolute", "authors"]
PromptMode = Literal["authors-eval", "padded", "constant"]
ShotFusion = Literal["attention", "mean"]
SHOT_FUSIONS: tuple[str, ...] = get_args(ShotFusion)


@dataclass(frozen=True)
class DiffewSConfig:
    """Inference settings of a DiffewS model.

    Attributes:
        resolution: square working resolution in pixels; images are resized to it (aspect ratio
            not kept) and the UNet sees latents of ``resolution / 8``.
        timestep: timestep fed to the UNet in both passes (OI2M: 1).
        threshold: default binarisation threshold, see `threshold_mode`.
        threshold_mode: ``"relative"``: foreground where probability > threshold x the map's
            maximum; ``"absolute"``: probability > threshold; ``"authors"``: the authors'
            evaluation rule exactly (8-bit truncation, channel mean > threshold x the largest
            channel value), see `diffews.processing.thresholds`.
        prompt: which empty-prompt embedding ``prompt_embedding.safetensors`` holds (see
            `diffews.modeling.prompt`): ``"padded"`` (77 tokens, the authors' training; what
            `DiffewSModel.from_stable_diffusion` and training use) or ``"authors-eval"`` (2 tokens,
            the authors' evaluation; what ``diffews convert`` stores by default), or ``"constant"``
            (a from-scratch model's fixed tensor). Folders written before this setting existed
            hold the padded embedding, the default.
        base_model: where the weights came from (hub id or folder), for the record.
        flip_queries: average each query's mask image with that of its mirror image: the query's
            latents flipped left to right go through the UNet and the decoder too, and the result is
            flipped back (test-time augmentation; twice the query pass). Not part of the method: off by
            default, for every shipped model too (docs/learning.md has what it measured).
        shot_fusion: how K > 1 supports combine: ``"attention"`` (the method's: the query attends to the
            keys and values of all K supports at once, one query pass) or ``"mean"`` (each support
            predicts alone and the K mask images are averaged before thresholding, as few-shot
            segmenters that vote over 1-shot predictions do; K query passes). One support: the same
            either way.
    """

    resolution: int = 512
    timestep: int = OI2M_TIMESTEP
    threshold: float = 0.25
    threshold_mode: ThresholdMode = "relative"
    prompt: PromptMode = PROMPT_PADDED
    base_model: str | None = None
    flip_queries: bool = False
    shot_fusion: ShotFusion = "attention"

    def __post_init__(self) -> None:
        for name in ("resolution", "timestep"):  # a float or a string here fails much later, deep in torch
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        check_resolution(self.resolution)
        if self.timestep < 0:
            raise ValueError(f"timestep must be >= 0, got {self.timestep}")
        if not isinstance(self.flip_queries, bool):
            raise ValueError(f"flip_queries must be true or false, got {self.flip_queries!r}")
        check_threshold(self.threshold, self.threshold_mode)
        if self.shot_fusion not in SHOT_FUSIONS:
            raise ValueError(f"shot_fusion must be one of {', '.join(SHOT_FUSIONS)}, got {self.shot_fusion!r}")
        if self.prompt not in PROMPT_MODES:
            raise ValueError(f"prompt must be one of {', '.join(PROMPT_MODES)}, got {self.prompt!r}")

    def thresholding(self, threshold: float | None = None, threshold_mode: str | None = None) -> tuple[float, str]:
        """(threshold, mode) with this config's value for each one not given; the one place
        binarisation defaults come from.

        Raises:
            ValueError: an unknown mode, or a threshold outside [0, 1].
        """
        threshold = self.threshold if threshold is None else threshold
        threshold_mode = threshold_mode or self.threshold_mode
        check_threshold(threshold, threshold_mode)
        return threshold, threshold_mode

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DiffewSConfig:
        """Inverse of `to_dict`; unknown keys are an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DiffewS config key(s): {', '.join(unknown)}")
        return cls(**values)


def check_resolution(resolution: int) -> None:
    """Raise `ValueError` unless `resolution` is a multiple of 8 in ``8..MAX_RESOLUTION``."""
    if not 0 < resolution <= MAX_RESOLUTION or resolution % 8:
        raise ValueError(f"resolution must be a multiple of 8 from 8 to {MAX_RESOLUTION}, got {resolution}")

