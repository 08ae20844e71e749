"""Regenerate the example images: ladybirds (the class) among distractors on grass.

Everything is drawn procedurally with a fixed seed, so the pictures are ours to license with the code.
Run: python examples/make_examples.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = (320, 240)
HERE = Path(__file__).parent


def grass(rng: np.random.Generator) -> Image.Image:
    base = np.zeros((SIZE[1], SIZE[0], 3), np.float32)
    base[..., 1] = 120 + 40 * rng.random((SIZE[1], SIZE[0]))
    base[..., 0] = 40 + 20 * rng.random((SIZE[1], SIZE[0]))
    base[..., 2] = 30 + 10 * rng.random((SIZE[1], SIZE[0]))
    return Image.fromarray(base.astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2))


def ladybird(draw: ImageDraw.ImageDraw, mask: ImageDraw.ImageDraw, x: int, y: int, r: int, rng: np.random.Generator) -> None:
    box = (x - r, y - r, x + r, y + r)
    draw.ellipse(box, fill=(200, 20, 25))
    draw.pieslice((x - r, y - r, x + r, y + r), 200, 340, fill=(20, 20, 20))
    draw.line((x, y - r // 2, x, y + r), fill=(20, 20, 20), width=max(1, r // 10))
    for _ in range(6):
        dx, dy = rng.uniform(-0.6, 0.6, 2) * r
        s = r // 6
        draw.ellipse((x + dx - s, y + dy - s, x + dx + s, y + dy + s), fill=(15, 15, 15))
    mask.ellipse(box, fill=255)


def distractor(draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    x, y = rng.integers(30, SIZE[0] - 30), rng.integers(30, SIZE[1] - 30)
    s = int(rng.integers(10, 25))
    colour = tuple(int(c) for c in rng.integers(60, 230, 3))
    draw.rectangle((x - s, y - s, x + s, y + s), fill=colour)


def scene(name: str, bugs: list[tuple[int, int, int]], seed: int, mask_dir: str) -> None:
    rng = np.random.default_rng(seed)
    image = grass(rng)
    mask = Image.new("L", SIZE, 0)
    draw, mask_draw = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for _ in range(3):
        distractor(draw, rng)
    for x, y, r in bugs:
        ladybird(draw, mask_draw, x, y, r, rng)
    image.save(HERE / f"{name}.jpg", quality=90)
    mask.save(HERE / mask_dir / f"{Path(name).name}_mask.png")


def main() -> None:
    for folder in ("support", "query", "query_ground_truth"):
        (HERE / folder).mkdir(exist_ok=True)
    scene("support/ladybird_1", [(150, 120, 45)], seed=1, mask_dir="support")
    scene("support/ladybird_2", [(90, 80, 30), (230, 160, 38)], seed=2, mask_dir="support")
    scene("query/meadow_1", [(200, 100, 40)], seed=3, mask_dir="query_ground_truth")
    scene("query/meadow_2", [(80, 150, 25), (250, 70, 30)], seed=4, mask_dir="query_ground_truth")
    scene("query/meadow_3", [(160, 130, 55)], seed=5, mask_dir="query_ground_truth")


if __name__ == "__main__":
    main()
