"""The README's result figure: the built-in model on the shipped examples (held-out class).

    python docs/learning/make_figure.py docs/examples-result.png

Top row: the support images with their masks (red). Below, one row per query: the query, the
model's mask (green) and the true mask (red), with the IoU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from diffews import DiffewSPipeline
from diffews.processing.images import load_image, load_mask
from diffews.processing.overlay import overlay_mask

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TILE, GAP = 192, 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("png", type=Path)
    args = parser.parse_args()
    supports = sorted((EXAMPLES / "support").glob("*.jpg"))
    queries = sorted((EXAMPLES / "query").glob("*.jpg"))
    masks = [s.with_name(f"{s.stem}_mask.png") for s in supports]
    pipe = DiffewSPipeline.from_pretrained()
    out = pipe([str(q) for q in queries], support_images=[str(s) for s in supports], support_masks=[str(m) for m in masks])
    rows = [[overlay_mask(load_image(s), load_mask(m)) for s, m in zip(supports, masks)]]
    labels = [["support " + s.stem.rsplit("_", 1)[-1] for s in supports]]
    for query, predicted in zip(queries, out.masks):
        truth = load_mask(EXAMPLES / "query_ground_truth" / f"{query.stem}_mask.png")
        iou = (predicted & truth).sum() / (predicted | truth).sum()
        image = load_image(query)
        rows.append([image, overlay_mask(image, predicted, color=(40, 200, 40)), overlay_mask(image, truth)])
        labels.append(["query", f"diffews-icons-small (IoU {iou:.2f})", "ground truth"])
    columns = max(len(r) for r in rows)
    canvas = Image.new("RGB", (columns * (TILE + GAP) - GAP, len(rows) * (TILE + 18 + GAP) - GAP), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (row, names) in enumerate(zip(rows, labels)):
        for c, (tile, name) in enumerate(zip(row, names)):
            x, y = c * (TILE + GAP), r * (TILE + 18 + GAP)
            canvas.paste(tile.resize((TILE, TILE)), (x, y + 18))
            draw.text((x + 2, y + 3), name, fill="black")
    args.png.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.png)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
