"""Few-shot episodes: a query image of a class and K distinct support images of the same class.

Episode i is a pure function of (seed, i), drawn by a generator seeded with (seed, i), as HSNet
draws them: for PASCAL-5i, FSS-1000 and custom folders the query is pair ``i mod len(pairs)`` of
the split (consecutive episodes cover the pairs in order); for COCO-20i and LVIS-92i
(`FewShotSplit.class_balanced`) the class is drawn uniformly, then the query among its images.
The supports are drawn without replacement from the class's other images (a split may rank them
in pools, see `FewShotSplit.support_pools`: the first pool is used up before the next).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..modeling.config import check_resolution
from ..processing.images import MASK_NEAREST, PREPROCESSING, check_mask_shape, preprocess_image, resize_mask
from .source import FewShotSplit

ORIGINAL = "original"


class EpisodeDataset(Dataset):
    """Episodes of a `FewShotSplit` at a square working resolution R.

    Every item holds (collatable with torch's default collate):

    - ``"query_image"``: ``(3, R, R)`` float32 in [-1, 1] (bilinear resize, aspect ratio not kept;
      `preprocessing` picks how, see `diffews.processing.images`);
    - ``"query_mask"``: ``(1, R, R)`` float32 in {0, 1} (nearest; ignore pixels are 0);
    - ``"support_images"``: ``(K, 3, R, R)`` float32 in [-1, 1];
    - ``"support_masks"``: ``(K, 1, R, R)`` float32 in {0, 1};
    - ``"class_id"``: int; ``"episode"``: i;
    - ``"query_target"``: the scoring ground truth, uint8 in {0, 1, 255 = ignore}: ``(T, T)``
      nearest-resized for ``target_size=T`` (default R), or at the image's original size for
      ``target_size="original"`` (then items differ in size: collate with `collate_episodes`);
    - ``"query_key"``: the query's image key; ``"support_keys"``: list of K keys.
    """

    def __init__(
        self,
        split: FewShotSplit,
        shots: int,
        resolution: int = 512,
        episodes: int | None = None,
        seed: int = 0,
        target_size: int | str | None = None,
        preprocessing: str = "diffews",
    ) -> None:
        if shots < 1:
            raise ValueError(f"shots must be at least 1, got {shots}")
        check_resolution(resolution)
        if episodes is not None and episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {episodes}")
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {', '.join(PREPROCESSING)}, got {preprocessing!r}")
        split.require_shots(shots)
        self.split = split
        self.shots = shots
        self.resolution = resolution
        self.episodes = episodes if episodes is not None else len(split.pairs)
        self.seed = seed
        self.target_size = resolution if target_size is None else target_size
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return self.episodes

    def episode(self, index: int) -> tuple[str, int, list[str]]:
        """(query key, class id, support keys) of episode `index`."""
        if not 0 <= index < self.episodes:
            raise IndexError(f"episode {index} out of range 0..{self.episodes - 1}")
        rng = np.random.default_rng([self.seed, index])
        if self.split.class_balanced:
            class_id = self.split.class_ids[int(rng.integers(len(self.split.class_ids)))]
            images = self.split.images_of_class[class_id]
            query = images[int(rng.integers(len(images)))]
        else:
            query, class_id = self.split.pairs[index % len(self.split.pairs)]
        supports: list[str] = []
        for pool in self.split.support_pools(query, class_id, rng):
            chosen = rng.choice(len(pool), size=min(self.shots - len(supports), len(pool)), replace=False)
            supports += [pool[i] for i in sorted(chosen.tolist())]
        return query, class_id, supports

    def __getitem__(self, index: int) -> dict[str, Any]:
        query, class_id, supports = self.episode(index)
        query_image, query_target = self._load(query, class_id)
        support_pairs = [self.working_pair(key, class_id) for key in supports]
        return {
            **dict(zip(("query_image", "query_mask"), self._resize(query_image, query_target))),
            "support_images": torch.stack([image for image, _ in support_pairs]),
            "support_masks": torch.stack([mask for _, mask in support_pairs]),
            "class_id": class_id,
            "episode": index,
            "query_target": self.scoring_target(query_target),
            "query_key": query,
            "support_keys": supports,
        }

    def scoring_target(self, labels: np.ndarray) -> torch.Tensor:
        """What a query is scored against: its labels ``(H, W)`` uint8 as they are (``target_size``
        "original") or nearest-resized to ``target_size`` by the preprocessing's mask rule."""
        if self.target_size == ORIGINAL:
            return torch.from_numpy(labels)
        size = (self.target_size, self.target_size)
        return resize_mask(labels, size, MASK_NEAREST[self.preprocessing])[0].to(torch.uint8)

    def working_pair(self, key: str, class_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image `key` ``(3, R, R)`` in [-1, 1] and its mask of `class_id` ``(1, R, R)`` in {0, 1} (ignore = 0)."""
        return self._resize(*self._load(key, class_id))

    def _resize(self, image: Image.Image, target: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        size = (self.resolution, self.resolution)
        return preprocess_image(image, size, self.preprocessing), resize_mask(target == 1, size, MASK_NEAREST[self.preprocessing])

    def _load(self, key: str, class_id: int) -> tuple[Image.Image, np.ndarray]:
        """RGB image and its target ``(H, W)`` in {0, 1, 255}, resized to the image if needed."""
        image = self.split.open_image(key)
        return image, self._target(key, class_id, image)

    def _target(self, key: str, class_id: int, image: Image.Image) -> np.ndarray:
        """The target of `class_id` in `key` at the size of its `image`."""
        target = self.split.target(key, class_id)
        if target.shape != (image.height, image.width):
            if self.split.strict_mask_shapes:
                label = f"{self.split.image_path(key)}: its mask of class {self.split.class_names[class_id]!r}"
                check_mask_shape(target.shape, (image.height, image.width), label)
            target = resize_mask(target, (image.height, image.width))[0].to(torch.uint8).numpy()
        return target


def collate_episodes(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Default collate, except original-size ``"query_target"`` tensors, kept as a list."""
    from torch.utils.data import default_collate

    targets = [item["query_target"] for item in items]
    batch = default_collate([{k: v for k, v in item.items() if k != "query_target"} for item in items])
    shapes = {tuple(t.shape) for t in targets}
    batch["query_target"] = torch.stack(targets) if len(shapes) == 1 else targets
    return batch


class NWayEpisodeDataset(EpisodeDataset):
    """N-way K-shot episodes: N distinct classes with K support images each, one query annotated
    for all N (as in the N-way few-shot segmentation literature).

    Episode i (a pure function of (seed, i)): the query and its class are drawn as for 1-way
    episodes (`EpisodeDataset.episode`); the N - 1 other classes uniformly from the split's other
    classes; the N classes are put in random order (label n = the n-th); each class's K supports
    are drawn without replacement from its images other than the query (so no support set ever
    contains the query).

    Items differ from `EpisodeDataset`'s in:

    - ``"support_images"``: ``(N, K, 3, R, R)``; ``"support_masks"``: ``(N, K, 1, R, R)``;
    - ``"class_ids"``: ``(N,)`` int64, instead of ``"class_id"``;
    - ``"query_target"``: labels uint8, 0 = background, n = class n, 255 = ignore (a pixel of
      two classes takes the first); a class the query does not show has no pixels;
    - ``"query_mask"``: ``(1, R, R)`` the labels nearest-resized to R (float);
    - ``"support_keys"``: N lists of K keys.
    """

    def __init__(self, split: FewShotSplit, ways: int, shots: int, *args, **kwargs) -> None:
        if ways < 1:
            raise ValueError(f"ways must be at least 1, got {ways}")
        if ways > len(split.class_ids):
            raise ValueError(f"{split.describe()}: {ways}-way episodes need {ways} classes, the split has {len(split.class_ids)}")
        super().__init__(split, shots, *args, **kwargs)
        self.ways = ways
        self._pairs = set(split.pairs)

    def nway_episode(self, index: int) -> tuple[str, list[int], list[list[str]]]:
        """(query key, N class ids in label order, N lists of K support keys) of episode `index`."""
        query, class_id, _ = self.episode(index)
        rng = np.random.default_rng([self.seed, index, self.ways])
        others = [c for c in self.split.class_ids if c != class_id]
        chosen = [class_id, *(others[i] for i in sorted(rng.choice(len(others), size=self.ways - 1, replace=False).tolist()))]
        classes = [chosen[i] for i in rng.permutation(self.ways).tolist()]
        supports = []
        for c in classes:
            candidates = [key for key in self.split.images_of_class[c] if key != query]
            picked = rng.choice(len(candidates), size=self.shots, replace=False)
            supports.append([candidates[i] for i in sorted(picked.tolist())])
        return query, classes, supports

    def query_labels(self, query: str, classes: list[int]) -> tuple[Image.Image, np.ndarray]:
        """The query image and its labels ``(H, W)`` uint8 over `classes` (0 background, 255 ignore)."""
        image = self.split.open_image(query)
        labels = np.zeros((image.height, image.width), dtype=np.uint8)
        ignore = np.zeros_like(labels, dtype=bool)
        for label, class_id in reversed(list(enumerate(classes, 1))):  # reversed: the first class wins overlaps
            if (query, class_id) not in self._pairs:
                continue
            target = self._target(query, class_id, image)
            labels[target == 1] = label
            ignore |= target == 255
        labels[ignore & (labels == 0)] = 255
        return image, labels

    def __getitem__(self, index: int) -> dict[str, Any]:
        query, classes, supports = self.nway_episode(index)
        image, labels = self.query_labels(query, classes)
        pairs = [[self.working_pair(key, c) for key in keys] for c, keys in zip(classes, supports)]
        size = (self.resolution, self.resolution)
        return {
            "query_image": preprocess_image(image, size, self.preprocessing),
            "query_mask": resize_mask(labels, size, MASK_NEAREST[self.preprocessing]),
            "support_images": torch.stack([torch.stack([i for i, _ in shots]) for shots in pairs]),
            "support_masks": torch.stack([torch.stack([m for _, m in shots]) for shots in pairs]),
            "class_ids": torch.tensor(classes, dtype=torch.int64),
            "episode": index,
            "query_target": self.scoring_target(labels),
            "query_key": query,
            "support_keys": supports,
        }
