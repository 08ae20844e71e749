"""Training from stored VAE posteriors: every distinct training image and mask is encoded once.

The VAE is frozen, so its posterior of an image never changes during training. With
``data.cache_latents`` the trainer encodes each (image, class mask) pair of the training split
once, keeps the posterior parameters (mean and log-variance, ``(8, R/8, R/8)`` float32 per image
and per mask) in memory, and trains from them: the loss is `DiffewSModel.training_loss` with ``posteriors=True``:
the same numbers as encoding every step (up to the VAE's dtype), without the VAE's cost or image decoding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data import EpisodeDataset
from ..errors import InputError
from ..modeling import DiffewSModel
from ..processing.masks import mask_to_image
from ..signals import until_stopped


class PosteriorEpisodes(Dataset):
    """The episodes of an `EpisodeDataset`, with VAE posteriors in the place of pixels.

    Item i holds the training keys of `diffews.data` items with posterior parameters instead of
    pixels: ``query_image`` and ``query_mask`` ``(8, h, w)``, ``support_images`` and
    ``support_masks`` ``(K, 8, h, w)``, plus ``class_id``; the episode is the dataset's episode i.
    """

    def __init__(self, episodes: Dataset, model: DiffewSModel, batch_size: int = 32, progress: bool = True) -> None:
        if not isinstance(episodes, EpisodeDataset):
            raise InputError("data.cache_latents needs the training episodes of a benchmark (an EpisodeDataset)")
        self.episodes = episodes
        pairs = episodes.split.pairs
        self.row = {pair: index for index, pair in enumerate(pairs)}
        images, masks = [], []
        with torch.no_grad():
            batches = tqdm(range(0, len(pairs), batch_size), desc="encoding training images", unit="batch", disable=not progress)
            for start in until_stopped(batches):
                loaded = [episodes.working_pair(key, class_id) for key, class_id in pairs[start : start + batch_size]]
                image = torch.stack([pair[0] for pair in loaded])
                mask = torch.stack([pair[1] for pair in loaded])
                images.append(model.encode_posterior(image).float().cpu())
                masks.append(model.encode_posterior(mask_to_image(mask)).float().cpu())
        self.images, self.masks = torch.cat(images), torch.cat(masks)

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        query, class_id, supports = self.episodes.episode(index)
        query_row = self.row[(query, class_id)]
        rows = torch.tensor([self.row[(key, class_id)] for key in supports])
        return {
            "query_image": self.images[query_row],
            "query_mask": self.masks[query_row],
            "support_images": self.images[rows],
            "support_masks": self.masks[rows],
            "class_id": class_id,
        }
