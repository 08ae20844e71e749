"""Training episodes: building the datasets, a resumable endless order, and the per-step shot count."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from ..errors import InputError
from .config import DataOptions

TRAINING_TENSORS = ("query_image", "query_mask", "support_images", "support_masks")
EPISODE_KEYS = (*TRAINING_TENSORS, "class_id")


def build_dataset(
    data: DataOptions, split: str, resolution: int, episodes: int | None, seed: int, images_per_class: int | None = None
) -> Dataset:
    """The episodic dataset of `split` through `diffews.data.build_episode_dataset`, with N = `data.shots`."""
    if data.root is None:
        raise InputError("no dataset root: set data.root in the config or pass --root")
    from ..data import build_episode_dataset

    return build_episode_dataset(
        data.benchmark, data.root, split, data.fold, data.shots, resolution=resolution, episodes=episodes, seed=seed,
        splits=data.splits, images_per_class=images_per_class,
    )


def collate_training(items: list[dict]) -> dict[str, torch.Tensor]:
    """Stack the tensors a training step uses; the items' other keys (names, scoring masks) are dropped."""
    return {key: torch.stack([item[key] for item in items]) for key in TRAINING_TENSORS}


class EpisodeSampler(Sampler[int]):
    """Endless order of dataset indices for process `rank` of `world`, starting at `start`.

    Pass e (e = 0, 1, ...) over the data is a permutation seeded by ``seed + e``; each process
    takes every `world`-th index of it (the tail that does not divide evenly is dropped), so the
    processes see disjoint episodes. The order is a pure function of (seed, rank, world, position):
    resuming at ``start = samples already drawn`` continues exactly.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1, start: int = 0) -> None:
        if size < world:
            raise InputError(f"the training set has {size} episodes, fewer than the {world} processes")
        self.size, self.seed, self.rank, self.world, self.start = size, seed, rank, world, start
        self.per_pass = size // world

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.per_pass)
        while True:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))
            yield from order[self.rank :: self.world][: self.per_pass][offset:].tolist()
            epoch, offset = epoch + 1, 0


class ShotSampler:
    """Draws the shot count K uniformly in 1..N for each micro-batch; its state is resumable."""

    def __init__(self, max_shots: int, seed: int) -> None:
        self.max_shots = max_shots
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self) -> int:
        return int(torch.randint(1, self.max_shots + 1, (1,), generator=self.generator))

    def slice(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`batch` with its support sets cut to the first K shots (the same K for every episode)."""
        shots = self.draw()
        return {**batch, "support_images": batch["support_images"][:, :shots], "support_masks": batch["support_masks"][:, :shots]}


class RandomFlip:
    """Mirrors training images left to right with their masks, each with probability `probability`.

    The query and every support shot of every episode get a draw of their own, so a support may
    face the other way from its query. The draws come from the flip's own generator (seeded by
    `seed`), whose state a checkpoint keeps; with probability 0 nothing is drawn.
    """

    PAIRS = (("query_image", "query_mask"), ("support_images", "support_masks"))

    def __init__(self, probability: float, seed: int) -> None:
        self.probability = probability
        self.generator = torch.Generator().manual_seed(seed)

    def apply(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`batch` with each chosen image and its mask mirrored along their last (width) axis."""
        if self.probability == 0:
            return batch
        mirrored = dict(batch)
        for image_key, mask_key in self.PAIRS:
            image = batch[image_key]
            chosen = torch.rand(image.shape[:-3], generator=self.generator) < self.probability
            chosen = chosen[..., None, None, None].to(image.device)
            for key in (image_key, mask_key):
                mirrored[key] = torch.where(chosen, batch[key].flip(-1), batch[key])
        return mirrored


def check_episode(item: dict, max_shots: int) -> None:
    """Raise `InputError` unless a dataset item has the contract's keys and at least `max_shots` shots."""
    missing = [key for key in EPISODE_KEYS if key not in item]
    if missing:
        raise InputError(f"training dataset items lack {', '.join(missing)}")
    have = item["support_images"].shape[0]
    if have < max_shots:
        raise InputError(f"training dataset items have {have} support shot(s) but data.shots is {max_shots}")
