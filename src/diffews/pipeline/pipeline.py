"""`DiffewSPipeline`: segment query images from K annotated support images."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import InputError
from ..modeling import DiffewSModel, SupportContext
from ..modeling.config import check_resolution
from ..modeling.mask_decoder import MaskDecoder
from ..registry import load_model
from ..processing.images import ImageInput, MaskInput, image_to_tensor, prepare_support, resize_image
from ..processing.thresholds import channel_mean, masks_at_sizes
from .speed import SpeedOptions


@dataclass(frozen=True)
class Prediction:
    """What the model predicts for a batch of B queries at the working resolution R.

    Attributes:
        mask_images: the decoded mask images ``(B, C, R, R)`` float32 in [0, 1] (C = 3 from the VAE,
            1 from a mask decoder); `diffews.processing.thresholds` turns them into masks by any rule.
        mask_latents: the generated mask latents ``(B, 4, R/8, R/8)`` (scaled like the VAE's latents).
    """

    mask_images: torch.Tensor
    mask_latents: torch.Tensor

    @property
    def probabilities(self) -> torch.Tensor:
        """Foreground probabilities ``(B, 1, R, R)`` in [0, 1]: the mask images' channel mean."""
        return channel_mean(self.mask_images)


@dataclass
class DiffewSOutput:
    """Per-query results, each at that query's original size.

    Attributes:
        masks: binary masks, ``(H_i, W_i)`` bool.
        probabilities: foreground probability maps, ``(H_i, W_i)`` float32 in [0, 1].
        thresholds: the absolute probability threshold applied to each query (for a relative
            threshold, threshold x that map's maximum; for ``"authors"``, threshold x the largest
            8-bit channel value / 255).
        mask_latents: the generated mask latents ``(B, 4, R/8, R/8)`` (scaled like the VAE's
            latents), on request (``output_latents=True``), else None.
        mask_images: the decoded mask images ``(B, C, R, R)`` in [0, 1] at the working resolution
            (C = 3; 1 with a mask decoder), on request (``output_mask_images=True``), else None;
            `diffews.processing.thresholds.masks_at_sizes` binarises them again at any threshold.
    """

    masks: list[np.ndarray]
    probabilities: list[np.ndarray]
    thresholds: list[float]
    mask_latents: torch.Tensor | None = None
    mask_images: torch.Tensor | None = None


class DiffewSPipeline:
    """Few-shot segmentation with a DiffewS model.

    Two ways to use it:

    >>> out = pipe(queries, support_images, support_masks)      # support encoded for this call
    >>> support = pipe.encode_support(support_images, support_masks)
    >>> out = pipe(queries, support=support)                     # reuse it for any number of calls

    The second runs the support pass (VAE encode + UNet) once per support set instead of once per
    call; the results are identical.

    `speed` (see `SpeedOptions`) selects faster execution: memory layout, attention kernel,
    autocast, `torch.compile` and static batch shapes. It changes the model in place.
    `mask_decoder` (see `diffews distill-decoder`) replaces the VAE decoder for the masks.

    Every prediction (this call, `diffews evaluate`, validation during training, the app) runs
    through one primitive, `predict`: query tensors and a support context in, mask images out.
    """

    def __init__(
        self, model: DiffewSModel, speed: SpeedOptions | None = None, mask_decoder: MaskDecoder | None = None
    ) -> None:
        if mask_decoder is not None and mask_decoder.config.latent_channels != model.vae.config.latent_channels:
            raise ValueError(
                f"mask decoder takes {mask_decoder.config.latent_channels} latent channels "
                f"but the model's VAE has {model.vae.config.latent_channels}"
            )
        self.model = model.eval()
        self.speed = speed if speed is not None else SpeedOptions()
        self.speed.apply(self.model)
        self.mask_decoder = None if mask_decoder is None else mask_decoder.eval().to(self.device, self.dtype)
        self._progress_bar_config: dict = {}

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        torch_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        speed: SpeedOptions | None = None,
    ) -> DiffewSPipeline:
        """Load a DiffewS model by name, folder or hub repository id (`diffews.registry.load_model`;
        safetensors only)."""
        return cls(load_model(name_or_path, torch_dtype=torch_dtype, device=device), speed)

    def save_pretrained(self, path: str | Path) -> None:
        """Save the model folder; `from_pretrained` reads it back bit-exactly."""
        self.model.save_pretrained(path)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> DiffewSPipeline:
        """Move the model and mask decoder (in place); returns self."""
        self.model.to(device=device, dtype=dtype)
        if self.mask_decoder is not None:
            self.mask_decoder.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def resolution(self) -> int:
        return self.model.config.resolution

    def _working_resolution(self, resolution: int | None) -> int:
        """`resolution`, or the model's if None; `InputError` unless a multiple of 8 in 8..MAX_RESOLUTION."""
        size = self.resolution if resolution is None else resolution
        try:
            check_resolution(size)
        except ValueError as error:
            raise InputError(str(error)) from None
        return size

    def set_progress_bar_config(self, **kwargs) -> None:
        """Options for the tqdm bar shown over query batches (e.g. ``disable=True``)."""
        self._progress_bar_config = kwargs

    @torch.no_grad()
    def encode_support_tensors(self, images: torch.Tensor, masks: torch.Tensor) -> SupportContext:
        """Support context of S sets of K shots, under the speed options.

        Args:
            images: ``(S, K, 3, R, R)`` in [-1, 1].
            masks: ``(S, K, 1, R, R)`` in {0, 1}.
        """
        with self.speed.context(self.device):
            return self.model.encode_support(images.to(self.device, self.dtype), masks.to(self.device, self.dtype))

    @torch.no_grad()
    def predict(self, query_images: torch.Tensor, support: SupportContext, pad_to: int | None = None) -> Prediction:
        """The inference primitive: a batch of queries and a support context -> decoded mask images.

        Runs the query pass under the speed options and decodes with the mask decoder when one is
        set (else the VAE decoder).

        Args:
            query_images: ``(B, 3, R, R)`` in [-1, 1], R the working resolution of `support`.
            support: a context with one support set (shared by every query) or B (set b serves query b).
            pad_to: with ``speed.static_batch``, a short batch is padded to this many queries
                (the padding's outputs are dropped), so every model call sees the same shapes.
        """
        count = query_images.shape[0]
        images = query_images.to(self.device, self.dtype)
        if self.speed.static_batch and pad_to is not None and count < pad_to:
            images = _pad(images, pad_to)
            if support.num_sets == count > 1:
                support = SupportContext(
                    {k: _pad(v, pad_to) for k, v in support.keys.items()},
                    {k: _pad(v, pad_to) for k, v in support.values.items()},
                    support.num_shots,
                )
        with self.speed.context(self.device):
            mask_latents = self.model.predict_mask_latents(self.model.encode_images(self.speed.prepare_images(images)), support)
            decode = self.mask_decoder if self.mask_decoder is not None else self.model.decode_mask_images
            mask_images = decode(mask_latents)
        return Prediction(mask_images[:count].float(), mask_latents[:count])

    @torch.no_grad()
    def encode_support(
        self,
        images: Sequence[ImageInput] | ImageInput,
        masks: Sequence[MaskInput] | MaskInput,
        sources: Sequence[str] | None = None,
        resolution: int | None = None,
    ) -> SupportContext:
        """Encode a support set of K >= 1 image/mask pairs once, for any number of queries.

        Args:
            images: K images (see `diffews.processing.images` for accepted types).
            masks: K binary masks of any size (resized to their image's working size with nearest
                neighbour; non-binary masks follow `diffews.processing.masks`' rule).
            sources: optional K labels (file names) used in error messages.
            resolution: working resolution; defaults to the model's.

        Raises:
            InputError: no supports, counts that differ, or an empty mask ("support mask N is empty").
        """
        images, masks = _as_list(images), _as_list(masks)
        if not images:
            raise InputError("no support images given: DiffewS needs at least one support image and mask")
        if len(images) != len(masks):
            raise InputError(f"{len(images)} support images but {len(masks)} support masks")
        size = self._working_resolution(resolution)
        labels = list(sources) if sources is not None else [None] * len(images)
        pairs = [prepare_support(img, msk, size, i + 1, src) for i, (img, msk, src) in enumerate(zip(images, masks, labels))]
        return self.encode_support_tensors(torch.stack([p[0] for p in pairs])[None], torch.stack([p[1] for p in pairs])[None])

    @torch.no_grad()
    def __call__(
        self,
        query_images: Sequence[ImageInput] | ImageInput,
        support_images: Sequence[ImageInput] | ImageInput | None = None,
        support_masks: Sequence[MaskInput] | MaskInput | None = None,
        *,
        support: SupportContext | None = None,
        threshold: float | None = None,
        threshold_mode: str | None = None,
        resolution: int | None = None,
        batch_size: int = 4,
        output_latents: bool = False,
        output_mask_images: bool = False,
    ) -> DiffewSOutput:
        """Segment query images.

        Args:
            query_images: one image or a list (any sizes; see `diffews.processing.images`).
            support_images, support_masks: the support set, encoded for this call; or
            support: a context from `encode_support`, reused as is.
            threshold, threshold_mode: binarisation; default to the model config's (relative
                0.25: foreground where p > 0.25 x max p). ``"authors"`` applies the authors'
                evaluation rule exactly (8-bit truncation, channel mean > 0.25 x the largest channel
                value; probabilities are then the 8-bit channel means): see
                `diffews.processing.thresholds`.
            resolution: working resolution; defaults to the model's (must match `support`'s).
            batch_size: queries per UNet call.
            output_latents: also return the generated mask latents.
            output_mask_images: also return the decoded mask images.
        """
        threshold, threshold_mode = self.model.config.thresholding(threshold, threshold_mode)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if support is None:
            if support_images is None or support_masks is None:
                raise InputError("give support_images and support_masks, or a support context from encode_support")
            support = self.encode_support(support_images, support_masks, resolution=resolution)
        elif support_images is not None or support_masks is not None:
            raise ValueError("give either a support context or support images and masks, not both")
        queries = _as_list(query_images)
        size = self._working_resolution(resolution)

        output = DiffewSOutput(masks=[], probabilities=[], thresholds=[])
        latents_out, images_out = [], []
        batches = list(_chunks(range(len(queries)), batch_size))
        bar_config = {"disable": len(batches) < 2, "desc": "segmenting", "unit": "batch", **self._progress_bar_config}
        for indices in tqdm(batches, **bar_config):
            originals = [image_to_tensor(queries[i], f"query image {i + 1}") for i in indices]
            prediction = self.predict(torch.stack([resize_image(t, (size, size)) for t in originals]), support, pad_to=batch_size)
            sizes = [tuple(t.shape[1:]) for t in originals]
            for mask, probability, cut in masks_at_sizes(prediction.mask_images, sizes, threshold, threshold_mode):
                output.masks.append(mask)
                output.probabilities.append(probability)
                output.thresholds.append(cut)
            if output_latents:
                latents_out.append(prediction.mask_latents.float().cpu())
            if output_mask_images:
                images_out.append(prediction.mask_images.cpu())
        if output_latents:
            output.mask_latents = torch.cat(latents_out)
        if output_mask_images:
            output.mask_images = torch.cat(images_out)
        return output


def _pad(batch: torch.Tensor, size: int) -> torch.Tensor:
    """`batch` ``(N, ...)`` lengthened to `size` by repeating its last entry."""
    return torch.cat([batch, batch[-1:].expand(size - batch.shape[0], *batch.shape[1:])])


def _as_list(items) -> list:
    if items is None:
        return []
    if isinstance(items, (list, tuple)):
        return list(items)
    if isinstance(items, (torch.Tensor, np.ndarray)) and items.ndim == 4:
        return list(items)
    return [items]


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
