"""`diffews segment`: segment query images from a few annotated support images."""

from __future__ import annotations

import argparse

from tqdm.auto import tqdm

from ..distributed import launched_processes
from ..errors import InputError
from ..io import OutputFolder, expand_image_paths, output_stems
from ..modeling.config import MAX_RESOLUTION
from ..processing.images import check_image_file, load_image, load_mask
from ..processing.overlay import mask_image, overlay_mask
from .common import add_inference_options, add_model_options, add_threshold_options, check_resolution_flag, load_inference_pipeline

DESCRIPTION = """\
Segment the class shown by the support images in every query image.

Each --support gives one example image and its binary mask (white = the class; see the README
for palette, 0/1 and RGBA masks). A mask need not match its image's size: masks are resized with
nearest neighbour. For every query, writes
<name>_mask.png (0/255) and <name>_overlay.png into --out. Nothing is written if any input is bad.
Under `accelerate launch` (or torchrun) the queries are shared among the processes; see docs/scaling.md.
"""

EPILOG = """\
examples:
  diffews segment --model ./diffews-coco --support dog.jpg dog_mask.png --query photos/ --out masks/
  diffews segment --model ./diffews-coco --support a.jpg a.png --support b.jpg b.png --query 'shots/*.jpg' --out out/
  accelerate launch --multi_gpu --num_processes 4 -m diffews segment --model ./diffews-coco --support dog.jpg dog_mask.png --query photos/ --out masks/
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment query images from a few examples",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    parser.add_argument(
        "--support", nargs=2, action="append", required=True, metavar=("IMG", "MASK"),
        help="a support image and its mask; repeat for K shots",
    )
    parser.add_argument("--query", nargs="+", required=True, metavar="PATH", help="query image files, folders or glob patterns")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    add_threshold_options(parser)
    parser.add_argument("--resolution", type=int, default=None, metavar="R", help=f"working resolution (multiple of 8, at most {MAX_RESOLUTION}); default: the model's (512)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N", help="queries per model call (default 4)")
    add_inference_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_resolution_flag(args.resolution)
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    queries = expand_image_paths(args.query)
    stems = output_stems(queries)
    for path in queries:
        check_image_file(path)
    support_images = [load_image(image) for image, _ in args.support]
    support_masks = [load_mask(mask, f"support mask {i} ({mask})") for i, (_, mask) in enumerate(args.support, 1)]

    processes = launched_processes()
    mine = processes.shard(len(queries), args.batch_size)  # whole batches: the batches of a one-process run
    with OutputFolder(args.out, processes) as out:
        pipe = load_inference_pipeline(args, processes)
        pipe.set_progress_bar_config(disable=True)
        try:
            pipe.model.config.thresholding(args.threshold, args.threshold_mode)
            support = pipe.encode_support(
                support_images, support_masks, sources=[mask for _, mask in args.support], resolution=args.resolution
            )
        except ValueError as error:
            raise InputError(str(error)) from None
        with tqdm(total=len(mine), desc="segmenting", unit="img", disable=not processes.is_main) as bar:
            for start in range(mine.start, mine.stop, args.batch_size):
                paths = queries[start : start + args.batch_size]
                images = [load_image(path) for path in paths]
                try:
                    result = pipe(
                        images, support=support, threshold=args.threshold, threshold_mode=args.threshold_mode,
                        resolution=args.resolution, batch_size=args.batch_size,
                    )
                except ValueError as error:
                    raise InputError(str(error)) from None
                for stem, image, mask in zip(stems[start:], images, result.masks):
                    out.save_image_later(lambda mask=mask: mask_image(mask), f"{stem}_mask.png")
                    out.save_image_later(lambda image=image, mask=mask: overlay_mask(image, mask), f"{stem}_overlay.png")
                bar.update(len(paths))
    if processes.is_main:
        print(f"wrote {len(queries)} masks and overlays to {out.path}")
    return 0
