"""A tiny synthetic episodic dataset for training tests: one coloured square per class on noise."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from diffews._testing import TINY_RESOLUTION
from diffews.training import TrainConfig

COLOURS = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])


class SquaresEpisodes(Dataset):
    """Episodes whose class is a colour: the mask is the square of that colour.

    Item i is a pure function of (seed, i), the layout of `diffews.data` items: ``query_image
    (3, R, R)`` in [-1, 1], ``query_mask (1, R, R)`` in {0, 1}, ``support_images (N, 3, R, R)``,
    ``support_masks (N, 1, R, R)``, ``class_id``.
    """

    def __init__(self, size: int = 16, shots: int = 2, resolution: int = TINY_RESOLUTION, seed: int = 0) -> None:
        self.size, self.shots, self.resolution, self.seed = size, shots, resolution, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + index)
        class_id = index % len(COLOURS)
        images, masks = zip(*(self._image(class_id, generator) for _ in range(self.shots + 1)))
        return {
            "query_image": images[0],
            "query_mask": masks[0],
            "support_images": torch.stack(images[1:]),
            "support_masks": torch.stack(masks[1:]),
            "class_id": class_id,
        }

    def _image(self, class_id: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.resolution
        image = torch.rand(3, size, size, generator=generator) * 0.4 - 0.2
        mask = torch.zeros(1, size, size)
        side = int(torch.randint(size // 4, size // 2, (1,), generator=generator))
        top, left = (int(v) for v in torch.randint(0, size - side, (2,), generator=generator))
        image[:, top : top + side, left : left + side] = COLOURS[class_id].view(3, 1, 1)
        mask[:, top : top + side, left : left + side] = 1.0
        return image, mask


def tiny_config(output_dir, **overrides) -> TrainConfig:
    """A CPU, fp32, tiny-model config writing to `output_dir`; `overrides` by option name."""
    options = dict(
        pretrained="tiny-random", resolution=TINY_RESOLUTION, shots=2, num_workers=0, learning_rate=1e-3,
        gradient_accumulation_steps=1, max_steps=4, mixed_precision="no", val_every=0, tracker="none",
        output_dir=str(output_dir), checkpoint_every=1000, log_every=1,
    )
    return TrainConfig().with_overrides({**options, **overrides})
