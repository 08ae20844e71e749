"""`DiffewSPipeline`: segment query images from K annotated support images."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Union
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import InputError
from ..modeling import DiffewSModel, SupportContext
from ..modeling.config import check_resolution
from ..modeling.builtin import DEFAULT_MODEL
from ..modeling.mask_decoder import MaskDecoder
from ..registry import load_model
from ..processing.images import (
    ImageInput,
    MaskInput,
    image_to_tensor,
    open_image_file,
    prepare_support,
    resize_image,
    resize_mask,
)
from ..processing.labels import check_class_names, label_map
from ..processing.masks import as_binary_mask, is_colour_mask
from ..processing.thresholds import channel_mean, masks_at_sizes
from ..signals import raise_if_stop_requested
from .speed import SpeedOptions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """What the model predicts for a batch of B queries at the working resolution R.

    Attributes:
        mask_images: the decoded mask images ``(B, C, R, R)`` float32 in [0, 1] (C = 3 from the VAE,
            1 from a mask decoder); `diffews.processing.thresholds` turns them into masks by any rule.
        mask_latents: the generated mask latents ``(B, 4, R/8, R/8)`` (scaled like the VAE's latents;
            with ``shot_fusion`` "mean", the average of the K one-shot ones, whose decoding is not
            `mask_images`, the average of the K decoded ones).
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
            latents; see `Prediction.mask_latents`), on request (``output_latents=True``), else None.
        mask_images: the decoded mask images ``(B, C, R, R)`` in [0, 1] at the working resolution
            (C = 3; 1 with a mask decoder), on request (``output_mask_images=True``), else None;
            `diffews.processing.thresholds.masks_at_sizes` binarises them again at any threshold.
    """

    masks: list[np.ndarray]
    probabilities: list[np.ndarray]
    thresholds: list[float]
    mask_latents: torch.Tensor | None = None
    mask_images: torch.Tensor | None = None


@dataclass
class ClassesOutput:
    """Per-query results for several classes, each at that query's original size.

    Attributes:
        class_names: the N class names; label i is ``class_names[i - 1]``.
        labels: label maps ``(H_i, W_i)`` uint8, 0 = background (see `diffews.processing.labels`).
        probabilities: per-class probability maps ``(N, H_i, W_i)`` float32 in [0, 1].
        masks: each class's own binary mask ``(N, H_i, W_i)`` bool (its threshold alone; classes may overlap).
        thresholds: the absolute thresholds applied, ``(N,)`` float32 per query.
        mask_images: the decoded mask images ``(B, N, C, R, R)`` in [0, 1] at the working
            resolution, on request (``output_mask_images=True``), else None;
            `label_maps_at_sizes` turns them into label maps again at any thresholds.
    """

    class_names: list[str]
    labels: list[np.ndarray]
    probabilities: list[np.ndarray]
    masks: list[np.ndarray]
    thresholds: list[np.ndarray]
    mask_images: torch.Tensor | None = None


ClassSupport = Union[SupportContext, tuple]
"""One class's supports: a context from `encode_support`, or an ``(images, masks)`` pair."""


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
        name_or_path: str | Path = DEFAULT_MODEL,
        torch_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        speed: SpeedOptions | None = None,
        mask_decoder: MaskDecoder | None = None,
    ) -> DiffewSPipeline:
        """Load a DiffewS model by name (default: the built-in ``diffews-icons-small``, packaged with
        diffews), folder or hub repository id (`diffews.registry.load_model`; safetensors only).
        `speed` and `mask_decoder` are the constructor's."""
        return cls(load_model(name_or_path, torch_dtype=torch_dtype, device=device), speed, mask_decoder)

    def save_pretrained(self, path: str | Path) -> None:
        """Save the model folder; `from_pretrained` reads it back bit-exactly."""
        self.model.save_pretrained(path)

    def to(
        self, *args: torch.device | str | int | torch.dtype | None, device: torch.device | str | int | None = None,
        dtype: torch.dtype | None = None,
    ) -> DiffewSPipeline:
        """Move the model and mask decoder (in place); returns self. A device and a dtype may also be
        given by position, in either order, as diffusers pipelines take them: ``pipe.to("cuda", torch.float16)``.
        Support contexts encoded before keep their device; the pipeline moves them when it uses them."""
        for arg in args:
            if isinstance(arg, torch.dtype) and dtype is None:
                dtype = arg
            elif isinstance(arg, (str, torch.device, int)) and device is None:
                device = arg
            elif arg is None:
                continue
            else:
                raise TypeError(f"DiffewSPipeline.to takes one device and one dtype, got {args!r}")
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
    def support_context(self, image_latents: torch.Tensor, mask_latents: torch.Tensor) -> SupportContext:
        """Support context from VAE latents ``(S, K, 4, R/8, R/8)`` of S sets of K support images and of
        their masks drawn white on black (e.g. kept from `encode_queries`), under the speed options."""
        with self.speed.context(self.device):
            return self.model.support_context(image_latents.to(self.device, self.dtype), mask_latents.to(self.device, self.dtype))

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
        if support.num_sets not in (1, count):
            raise ValueError(f"a support context of {support.num_sets} sets for {count} queries: give one set, or one per query")
        latents = self.encode_queries(query_images, pad_to)
        if support.num_sets == count > 1 and latents.shape[0] > count:
            support = SupportContext(
                {k: _pad(v, latents.shape[0]) for k, v in support.keys.items()},
                {k: _pad(v, latents.shape[0]) for k, v in support.values.items()},
                support.num_shots,
            )
        prediction = self.predict_latents(latents, support)
        return Prediction(prediction.mask_images[:count], prediction.mask_latents[:count])

    @torch.no_grad()
    def encode_queries(self, query_images: torch.Tensor, pad_to: int | None = None) -> torch.Tensor:
        """VAE latents ``(B', 4, R/8, R/8)`` of query images ``(B, 3, R, R)`` in [-1, 1] (or of any images:
        supports, masks drawn white on black), under the speed options; with ``speed.static_batch`` a
        short batch is padded to `pad_to` (B' = pad_to)."""
        images = query_images.to(self.device, self.dtype)
        if self.speed.static_batch and pad_to is not None and images.shape[0] < pad_to:
            images = _pad(images, pad_to)
        with self.speed.context(self.device):
            return self.model.encode_images(self.speed.prepare_images(images))

    @torch.no_grad()
    def predict_latents(self, query_latents: torch.Tensor, support: SupportContext) -> Prediction:
        """Query pass and decoding for query latents ``(B, 4, R/8, R/8)`` from `encode_queries`; `support`
        holds S sets with B a multiple of S, set s serving queries s*B/S ... (`SupportContext`).

        With the model's ``config.shot_fusion`` "mean" and K > 1 shots, each shot predicts alone and
        the K mask images and mask latents are averaged. With its ``config.flip_queries``, the mask
        images are the mean of those of the latents and of their mirror image (flipped back); the mask
        latents are those of the latents as given."""
        raise_if_stop_requested()  # every prediction comes here: a run stops between batches
        support = support.to(self.device)  # a context encoded before the pipeline moved
        contexts = support.shots() if self.model.config.shot_fusion == "mean" else [support]
        with self.speed.context(self.device):
            mask_latents, mask_images = self._mean_pass(query_latents, contexts)
            if self.model.config.flip_queries:
                mirrored = self._mean_pass(query_latents.flip(-1), contexts)[1]
                mask_images = (mask_images + mirrored.flip(-1)) / 2
        return Prediction(mask_images, mask_latents)

    def _mean_pass(self, query_latents: torch.Tensor, contexts: list[SupportContext]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask latents, float32 mask images) of one query pass per context, averaged (summed as they
        come: one pass's outputs held at a time)."""
        latents_sum, images_sum = self._query_pass(query_latents, contexts[0])
        images_sum = images_sum.float()
        for context in contexts[1:]:
            latents, images = self._query_pass(query_latents, context)
            latents_sum, images_sum = latents_sum + latents, images_sum + images.float()
        if len(contexts) == 1:  # the method's single pass: its outputs as they are
            return latents_sum, images_sum
        return latents_sum / len(contexts), images_sum / len(contexts)

    def _query_pass(self, query_latents: torch.Tensor, support: SupportContext) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask latents, decoded mask images) of one query pass, decoded by the mask decoder if set."""
        mask_latents = self.model.predict_mask_latents(query_latents, support)
        decode = self.mask_decoder if self.mask_decoder is not None else self.model.decode_mask_images
        return mask_latents, decode(mask_latents)

    @torch.no_grad()
    def predict_classes(
        self, query_images: torch.Tensor, supports: Sequence[SupportContext], pad_to: int | None = None,
        class_batch_size: int | None = None,
    ) -> torch.Tensor:
        """Several classes at once: mask images ``(B, N, C, R, R)`` in [0, 1] of B queries for N
        classes (C channels, as `Prediction.mask_images`).

        The queries are VAE-encoded once; the query passes of classes with the same number of
        shots and the same layout (one shared set, or one per query) run as one UNet batch
        (`class_batch_size` classes at most per call, default all), query b of class n paired with
        class n's support set (or its b-th one). Shared support sets are broadcast to the queries,
        not copied per query.

        Args:
            query_images: ``(B, 3, R, R)`` in [-1, 1].
            supports: N contexts, each of one support set (shared by every query, from
                `encode_support`) or of B (set b serves query b, as in N-way episodes).
            pad_to: see `predict`.
            class_batch_size: classes per UNet call (None: all classes of a shot count and layout).
        """
        count = query_images.shape[0]
        if any(context.num_sets not in (1, count) for context in supports):
            raise ValueError(f"each class needs a support context of one support set or {count} (one per query)")
        latents = self.encode_queries(query_images, pad_to)
        total = latents.shape[0]

        def rows(tensor: torch.Tensor) -> torch.Tensor:
            """A shared set as it is (it serves its block of `total` queries, see `KVFusion`); sets per
            query padded to `total` rows like the latents."""
            tensor = tensor.to(latents.device)  # a context encoded before the pipeline moved
            return tensor if tensor.shape[0] == 1 else _pad(tensor, total)

        mask_images: list[torch.Tensor] = [None] * len(supports)  # type: ignore[list-item]
        for group in _class_groups(supports, class_batch_size):
            contexts = [supports[n] for n in group]
            fused = SupportContext(
                {k: torch.cat([rows(ctx.keys[k]) for ctx in contexts]) for k in contexts[0].keys},
                {k: torch.cat([rows(ctx.values[k]) for ctx in contexts]) for k in contexts[0].values},
                contexts[0].num_shots,
            )
            prediction = self.predict_latents(latents.repeat(len(group), 1, 1, 1), fused)
            for slot, n in enumerate(group):
                mask_images[n] = prediction.mask_images[slot * total : slot * total + count]
        return torch.stack(mask_images, dim=1)

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
                neighbour; non-binary masks follow `diffews.processing.masks`' rule), or one
                ``(K, H, W)`` / ``(K, 1, H, W)`` array or tensor of them (a 3-D array whose last
                axis is 3 or 4 long is one colour mask).
            sources: optional K labels (file names) used in error messages.
            resolution: working resolution; defaults to the model's.

        Raises:
            InputError: no supports, counts that differ, or an empty mask ("support mask N is empty").
        """
        images = _as_list(images)
        masks = _as_mask_list(masks, len(images))
        if not images:
            raise InputError("no support images given: DiffewS needs at least one support image and mask")
        if len(images) != len(masks):
            raise InputError(f"{len(images)} support images but {len(masks)} support masks")
        if sources is not None and len(sources) != len(images):
            raise InputError(f"{len(images)} support images but {len(sources)} source labels")
        size = self._working_resolution(resolution)
        labels = list(sources) if sources is not None else [None] * len(images)
        pairs = [prepare_support(img, msk, size, i + 1, src) for i, (img, msk, src) in enumerate(zip(images, masks, labels))]
        return self.encode_support_tensors(torch.stack([p[0] for p in pairs])[None], torch.stack([p[1] for p in pairs])[None])

    @torch.no_grad()
    def encode_classes(
        self,
        classes: Mapping[str, ClassSupport],
        sources: Mapping[str, Sequence[str]] | None = None,
        resolution: int | None = None,
    ) -> dict[str, SupportContext]:
        """Support contexts of several classes, each encoded once (contexts given are kept as they are).

        Args:
            classes: class name -> a context from `encode_support`, or ``(images, masks)``
                (K >= 1 pairs; masks of a class that are empty, or become empty when resized to
                the working resolution, are left out of its support set, with a warning).
            sources: optional class name -> K labels for messages (default: a mask's file path,
                else "class 'name', shot k").
            resolution: working resolution; defaults to the model's.

        Raises:
            InputError: invalid or duplicate class names, a class whose masks are all empty.
        """
        check_class_names(list(classes), "classes")
        size = self._working_resolution(resolution)
        contexts = {}
        for name, given in classes.items():
            if isinstance(given, SupportContext):
                if given.num_sets != 1:
                    raise ValueError(f"class {name!r}: a context of {given.num_sets} support sets; give one set per class")
                contexts[name] = given
                continue
            if not isinstance(given, (tuple, list)) or len(given) != 2:
                raise InputError(f"class {name!r}: give a support context or an (images, masks) pair, got {type(given).__name__}")
            images = _as_list(given[0])
            masks = _as_mask_list(given[1], len(images))
            if len(images) != len(masks):
                raise InputError(f"class {name!r}: {len(images)} support images but {len(masks)} support masks")
            labels = _shot_labels(name, masks, (sources or {}).get(name))
            binaries = _load_masks(masks, labels)
            keep = [i for i, binary in enumerate(binaries) if binary.any() and resize_mask(binary, (size, size)).any()]
            if not keep:
                raise InputError(f"class {name!r}: every support mask is empty at {size}x{size} ({', '.join(labels)})")
            if len(keep) < len(masks):
                left_out = ", ".join(labels[i] for i in range(len(masks)) if i not in keep)
                logger.warning("class %r: support masks empty at %dx%d left out: %s", name, size, size, left_out)
            contexts[name] = self.encode_support(
                [images[i] for i in keep], [binaries[i] for i in keep], sources=[labels[i] for i in keep], resolution=size
            )
        return contexts

    @torch.no_grad()
    def segment_classes(
        self,
        query_images: Sequence[ImageInput] | ImageInput,
        classes: Mapping[str, ClassSupport],
        *,
        threshold: float | Mapping[str, float] | None = None,
        threshold_mode: str | Mapping[str, str] | None = None,
        resolution: int | None = None,
        batch_size: int = 4,
        class_batch_size: int | None = None,
        output_mask_images: bool = False,
    ) -> ClassesOutput:
        """Segment several classes in every query: a label map, per-class probabilities and masks.

        Each query is VAE-encoded once for all classes; the query passes of the classes run as
        batches (see `predict_classes`). Class n's mask and probabilities are exactly what a binary
        run with that class's supports gives (same threshold rules); a pixel then takes the class of
        highest probability among the masks covering it (`diffews.processing.labels.label_map`).

        Args:
            query_images: one image or a list (any sizes).
            classes: class name -> a context from `encode_support` (reused as is) or
                ``(images, masks)`` (encoded for this call, see `encode_classes`). Label i is the
                i-th name.
            threshold, threshold_mode: one value for every class, or a mapping class name -> value
                (classes left out get the model's default).
            resolution: working resolution; defaults to the model's.
            batch_size: queries per VAE call (UNet calls hold up to batch_size x classes images).
            class_batch_size: classes per UNet call; default all classes of the same shot count.
            output_mask_images: also return the decoded mask images.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if class_batch_size is not None and class_batch_size < 1:
            raise ValueError(f"class_batch_size must be at least 1, got {class_batch_size}")
        contexts = {name: context.to(self.device) for name, context in self.encode_classes(classes, resolution=resolution).items()}
        names = list(contexts)
        rules = [
            self.model.config.thresholding(t, m)
            for t, m in zip(_per_class(threshold, names, "threshold"), _per_class(threshold_mode, names, "threshold_mode"))
        ]
        queries = _as_list(query_images)
        size = self._working_resolution(resolution)
        supports = list(contexts.values())

        output = ClassesOutput(class_names=names, labels=[], probabilities=[], masks=[], thresholds=[])
        images_out = []
        for batch, sizes in self._query_batches(queries, size, batch_size):
            mask_images = self.predict_classes(batch, supports, pad_to=batch_size, class_batch_size=class_batch_size)
            for labels, probabilities, masks, cuts in label_maps_at_sizes(mask_images, sizes, rules):
                output.labels.append(labels)
                output.probabilities.append(probabilities)
                output.masks.append(masks)
                output.thresholds.append(cuts)
            if output_mask_images:
                images_out.append(mask_images.cpu())
        if output_mask_images:
            output.mask_images = torch.cat(images_out)
        return output

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
                0.25, foreground where p > 0.25 x max p, unless it says otherwise: the built-in
                model's is relative 0.005). ``"authors"`` applies the authors'
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
        support = support.to(self.device)  # once, not per batch, if encoded before the pipeline moved
        queries = _as_list(query_images)
        size = self._working_resolution(resolution)

        output = DiffewSOutput(masks=[], probabilities=[], thresholds=[])
        latents_out, images_out = [], []
        for batch, sizes in self._query_batches(queries, size, batch_size):
            prediction = self.predict(batch, support, pad_to=batch_size)
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


    def _query_batches(self, queries: list, size: int, batch_size: int) -> Iterator[tuple[torch.Tensor, list[tuple[int, int]]]]:
        """Queries in batches of `batch_size`, under the progress bar: each batch resized to ``(B, 3, size, size)``
        in [-1, 1], with the queries' original ``(H, W)`` sizes."""
        batches = list(_chunks(range(len(queries)), batch_size))
        bar_config = {"disable": len(batches) < 2, "desc": "segmenting", "unit": "batch", **self._progress_bar_config}
        for indices in tqdm(batches, **bar_config):
            originals = [image_to_tensor(queries[i], f"query image {i + 1}") for i in indices]
            yield torch.stack([resize_image(t, (size, size)) for t in originals]), [tuple(t.shape[1:]) for t in originals]


def label_maps_at_sizes(
    mask_images: torch.Tensor, sizes: list[tuple[int, int]], rules: Sequence[tuple[float, str]]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Mask images ``(B, N, C, R, R)`` of N classes -> per query at its size ``sizes[b]``: (label
    map ``(H, W)`` uint8, probabilities ``(N, H, W)``, masks ``(N, H, W)`` bool, thresholds ``(N,)``).

    Class n is binarised alone with ``rules[n]`` = (threshold, mode), exactly as a binary run
    (`masks_at_sizes`); the label map follows `diffews.processing.labels.label_map`.
    """
    per_class = [masks_at_sizes(mask_images[:, n], sizes, t, m) for n, (t, m) in enumerate(rules)]
    results = []
    for query in zip(*per_class):  # one query: (mask, probability, threshold) of each class
        masks = np.stack([mask for mask, _, _ in query])
        probabilities = np.stack([probability for _, probability, _ in query])
        cuts = np.array([cut for _, _, cut in query], dtype=np.float32)
        results.append((label_map(probabilities, masks), probabilities, masks, cuts))
    return results


def _per_class(value, names: list[str], what: str) -> list:
    """`value` for every class: a mapping name -> value (None for missing names), or one value for all."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"{what} given for unknown class(es): {', '.join(map(repr, unknown))}")
        return [value.get(name) for name in names]
    return [value] * len(names)


def _class_groups(supports: Sequence[SupportContext], size: int | None) -> Iterator[list[int]]:
    """Indices of the contexts, grouped by shot count (one UNet batch needs equal token counts) and
    by whether they hold one shared set or one per query (so shared sets are never copied per
    query), each group cut into pieces of at most `size`."""
    groups: dict[tuple[int, bool], list[int]] = {}
    for index, context in enumerate(supports):
        groups.setdefault((context.num_shots, context.num_sets == 1), []).append(index)
    for group in groups.values():
        yield from _chunks(group, size or len(group))


def _load_masks(masks: list, labels: list[str]) -> list[np.ndarray]:
    """Binary masks of any accepted input (file paths opened), empty ones included; `labels` name them."""
    loaded = []
    for mask, label in zip(masks, labels):
        if isinstance(mask, (str, Path)):
            mask = open_image_file(mask)
        loaded.append(as_binary_mask(mask, label))
    return loaded


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


def _as_mask_list(masks, count: int) -> list:
    """`_as_list` for the masks of `count` support images, where a ``(count, H, W)`` stack is `count`
    masks (a colour ``(H, W, 3|4)`` mask, or a stack of another length, is one: checked later)."""
    stack = isinstance(masks, (torch.Tensor, np.ndarray)) and masks.ndim == 3 and not is_colour_mask(masks)
    if stack and masks.shape[0] == count > 1:
        return list(masks)
    return _as_list(masks)


def _shot_labels(name: str, masks: list, given: Sequence[str] | None) -> list[str]:
    """How messages name class `name`'s masks: the `given` labels, else a mask's file path, else
    "class 'name', shot k"."""
    if given is not None and len(given) != len(masks):
        raise InputError(f"class {name!r}: {len(masks)} support masks but {len(given)} source labels")
    return [
        (given[index] if given is not None else None)
        or (str(mask) if isinstance(mask, (str, Path)) else f"class {name!r}, shot {index + 1}")
        for index, mask in enumerate(masks)
    ]


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
