"""What the evaluator scores: a DiffewS model, or a baseline that maps the same episodes to probabilities.

A predictor takes a collated batch of episodes (`diffews.data.EpisodeDataset` items) and returns
mask images ``(B, C, R, R)`` in [0, 1] at the working resolution: a model's decoded images (C = 3),
or a baseline's foreground probabilities (C = 1, a grey image); the evaluator resizes, binarises
(`diffews.processing.thresholds`) and scores every predictor's images the same way.
Baselines (``--baseline``):

- ``all-foreground``: every pixel is the class;
- ``support-mask``: the support masks themselves, averaged over the K shots, pasted as the
  prediction (is the object simply where the support's object was?);
- ``colour-histogram``: histogram back-projection: the share of the support's foreground among the
  support pixels of each quantised colour, looked up at every query pixel (does colour alone find it?).

`OtherClassSupport` gives each episode a support set of another class: a few-shot segmenter must
then fail, where a saliency detector ("segment the object") would not notice.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data import EpisodeDataset
from ..modeling import DiffewSConfig, SupportContext
from ..pipeline import DiffewSPipeline
from ..processing.masks import mask_to_image


class Predictor(Protocol):
    """Episodes -> mask images.

    Attributes:
        device, dtype: where it runs (for reports).
        config: whose threshold and mode binarise its images unless the evaluation sets them.
        record: what else a report records about it.
    """

    device: str
    dtype: str
    config: DiffewSConfig
    record: dict[str, Any]

    def mask_images(self, batch: dict[str, Any]) -> torch.Tensor:
        """``(B, C, R, R)`` float32 in [0, 1], C = 3 or 1, for a collated batch of B episodes at resolution R."""


class ModelPredictor:
    """A DiffewS pipeline, through `DiffewSPipeline.predict` (its mask decoder and speed options
    included): one support context per episode (S = B), decoded mask images out. `pad_to`: see
    `DiffewSPipeline.predict`."""

    def __init__(self, pipe: DiffewSPipeline, pad_to: int | None = None) -> None:
        self.pipe, self.pad_to = pipe, pad_to
        self.device = str(pipe.device)
        self.dtype = str(pipe.dtype).removeprefix("torch.")
        self.config = pipe.model.config
        model = pipe.model
        self.record = {
            "mask_decoder": pipe.mask_decoder is not None,
            "cache_latents": False,
            "speed": asdict(pipe.speed),
            "model_settings": {
                "timestep": model.config.timestep, "prompt": model.config.prompt, "prompt_tokens": model.prompt_embedding.shape[1],
                "flip_queries": model.config.flip_queries, "shot_fusion": model.config.shot_fusion,
            },
        }

    def mask_images(self, batch: dict[str, Any]) -> torch.Tensor:
        context = self.pipe.encode_support_tensors(batch["support_images"], batch["support_masks"])
        return self.pipe.predict(batch["query_image"], context, self.pad_to).mask_images

    def class_mask_images(self, batch: dict[str, Any]) -> torch.Tensor:
        """N-way episodes: ``(B, N, C, R, R)`` through `DiffewSPipeline.predict_classes` (each query
        encoded once; the B x N support sets encoded in one pass)."""
        episodes, ways = batch["support_images"].shape[:2]
        context = self.pipe.encode_support_tensors(batch["support_images"].flatten(0, 1), batch["support_masks"].flatten(0, 1))

        def slot(tensors: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
            return {name: t.unflatten(0, (episodes, ways))[:, n] for name, t in tensors.items()}

        contexts = [SupportContext(slot(context.keys, n), slot(context.values, n), context.num_shots) for n in range(ways)]
        return self.pipe.predict_classes(batch["query_image"], contexts, self.pad_to)


def class_mask_images(predictor: Predictor, batch: dict[str, Any]) -> torch.Tensor:
    """Mask images ``(B, N, C, R, R)`` of a collated batch of N-way episodes: the predictor's own
    `class_mask_images` when it has one, else its `mask_images` for each class in turn."""
    if hasattr(predictor, "class_mask_images"):
        return predictor.class_mask_images(batch)
    ways = batch["support_images"].shape[1]
    per_class = [
        predictor.mask_images({**batch, "support_images": batch["support_images"][:, n], "support_masks": batch["support_masks"][:, n]})
        for n in range(ways)
    ]
    return torch.stack(per_class, dim=1)


class CachedLatentsPredictor(ModelPredictor):
    """A `ModelPredictor` that encodes every distinct image, and every support mask, once.

    In a benchmark the same test images come back as queries and as supports of many episodes;
    their VAE latents (posterior means, as the model's own encoding) are kept on the CPU by image
    key (``"query_key"``, ``"support_keys"``; a support mask by key and class) and reused. Encoding,
    support pass, query pass and decoding are the pipeline's (`DiffewSPipeline.encode_queries`,
    `support_context`, `predict_latents`: speed options and mask decoder included), so the numbers
    are those of `ModelPredictor` up to float rounding; `pad_to` is not used. 1-way episodes only.
    """

    def __init__(self, pipe: DiffewSPipeline) -> None:
        super().__init__(pipe)
        self.record["cache_latents"] = True
        self.latents: dict[tuple, torch.Tensor] = {}

    @torch.no_grad()
    def mask_images(self, batch: dict[str, Any]) -> torch.Tensor:
        batch_size, shots = batch["support_images"].shape[:2]
        classes = batch.get("support_class_id", batch["class_id"])
        support_keys = [[batch["support_keys"][k][b] for k in range(shots)] for b in range(batch_size)]
        queries = self._latents([("image", key) for key in batch["query_key"]], batch["query_image"])
        images = self._latents([("image", key) for keys in support_keys for key in keys], batch["support_images"].flatten(0, 1))
        masks = self._latents(
            [("mask", key, int(c)) for keys, c in zip(support_keys, classes) for key in keys],
            mask_to_image(batch["support_masks"].flatten(0, 1).float()),
        )
        context = self.pipe.support_context(images.unflatten(0, (batch_size, shots)), masks.unflatten(0, (batch_size, shots)))
        return self.pipe.predict_latents(queries, context).mask_images

    def class_mask_images(self, batch: dict[str, Any]) -> torch.Tensor:
        raise ValueError("cached latents score 1-way episodes; N-way episodes run uncached")

    def _latents(self, keys: list[tuple], images: torch.Tensor) -> torch.Tensor:
        """Latents of `images` ``(N, 3, R, R)`` (named by `keys`), encoding only those not seen yet."""
        new_keys = [key for key in dict.fromkeys(keys) if key not in self.latents]
        if new_keys:
            first = {key: keys.index(key) for key in new_keys}
            encoded = self.pipe.encode_queries(images[[first[key] for key in new_keys]]).cpu()
            self.latents.update(zip(new_keys, encoded))
        return torch.stack([self.latents[key] for key in keys]).to(self.pipe.device, self.pipe.dtype)


class Baseline:
    """What every baseline shares: runs on the CPU in float32, binarised with the default model
    config's threshold, nothing more to record."""

    device, dtype = "cpu", "float32"
    config = DiffewSConfig()
    record: dict[str, Any] = {}


class AllForeground(Baseline):
    """Probability 1 everywhere."""

    def mask_images(self, batch: dict[str, Any]) -> torch.Tensor:
        return torch.ones_like(batch["query_image"][:, :1], dtype=torch.float32)


class SupportMask(Baseline):
    """The mean of the K support masks, as if the object sat where it sat in the supports."""

    def mask_images(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["support_masks"].float().mean(dim=1)


class ColourHistogram(Baseline):
    """Back-projection of the supports' colour statistics.

    Colours are quantised to `bins` levels per RGB channel. For every colour bin,
    p = (foreground support pixels of that colour + `prior` x f) / (all support pixels of that colour + `prior`),
    with f the foreground share of all support pixels; the query's map is p at each pixel's bin
    (f where the supports never show the colour).
    """

    def __init__(self, bins: int = 16, prior: float = 1.0) -> None:
        self.bins, self.prior = bins, prior

    def colour_bins(self, images: torch.Tensor) -> torch.Tensor:
        """Bin index of every pixel of ``(N, 3, H, W)`` images in [-1, 1]: ``(N, H, W)`` int64 in [0, bins^3)."""
        levels = ((images.float().clamp(-1, 1) + 1) / 2 * self.bins).long().clamp(max=self.bins - 1)
        return (levels[:, 0] * self.bins + levels[:, 1]) * self.bins + levels[:, 2]

    def mask_images(self, batch: dict[str, Any]) -> torch.Tensor:
        size = self.bins**3
        maps = []
        for support_images, support_masks, query in zip(batch["support_images"], batch["support_masks"], batch["query_image"]):
            colours = self.colour_bins(support_images).flatten()
            foreground = support_masks[:, 0].flatten() > 0.5
            total = torch.bincount(colours, minlength=size).double()
            object_pixels = torch.bincount(colours[foreground], minlength=size).double()
            overall = object_pixels.sum() / total.sum()
            share = (object_pixels + self.prior * overall) / (total + self.prior)
            maps.append(share[self.colour_bins(query[None])].float())
        return torch.stack(maps)


SUPPORT_KINDS = ("same-class", "other-class")
"""Where the evaluator takes support sets from: the query's class (the protocol) or another class."""

BASELINES = {"all-foreground": AllForeground, "support-mask": SupportMask, "colour-histogram": ColourHistogram}


class OtherClassSupport(Dataset):
    """The episodes of `episodes`, each with its support set replaced by K images of another class.

    Episode i keeps its query and ground truth; its supports are K distinct images of a class
    (``"support_class_id"``) drawn uniformly among the split's other classes, with their masks of
    that class, by a generator seeded with (episode seed, i, 1), so the substitution is fixed.
    """

    def __init__(self, episodes: EpisodeDataset) -> None:
        if len(episodes.split.class_ids) < 2:
            raise ValueError(f"{episodes.split.describe()}: other-class supports need at least 2 classes")
        self.episodes = episodes

    @property
    def split(self):
        return self.episodes.split

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.episodes[index]
        split = self.episodes.split
        rng = np.random.default_rng([self.episodes.seed, index, 1])
        others = [c for c in split.class_ids if c != item["class_id"]]
        other = others[int(rng.integers(len(others)))]
        images = split.images_of_class[other]
        chosen = sorted(rng.choice(len(images), size=self.episodes.shots, replace=False).tolist())
        keys = [images[i] for i in chosen]
        pairs = [self.episodes.working_pair(key, other) for key in keys]
        return {
            **item,
            "support_images": torch.stack([image for image, _ in pairs]),
            "support_masks": torch.stack([mask for _, mask in pairs]),
            "support_keys": keys,
            "support_class_id": other,
        }
