"""`diffews segment`: segment query images from a few annotated support images."""

from __future__ import annotations

import argparse

from tqdm.auto import tqdm

from ..errors import InputError
from ..io import OutputFolder, expand_image_paths, output_stems
from ..modeling.config import MAX_RESOLUTION, THRESHOLD_MODES
from ..modeling.mask_decoder import load_mask_decoder
from ..pipeline import SpeedOptions
from ..processing.images import check_image_file, load_image, load_mask
from ..processing.overlay import mask_image, overlay_mask
from .common import add_model_options, check_resolution_flag, load_pipeline

DESCRIPTION = """\
Segment the class shown by the support images in every query image.

Each --support gives one example image and its binary mask (white = the class; see the README
for palette, 0/1 and RGBA masks). A mask need not match its image's size: masks are resized with
nearest neighbour. For every query, writes
<name>_mask.png (0/255) and <name>_overlay.png into --out. Nothing is written if any input is bad.
"""

EPILOG = """\
examples:
  diffews segment --model ./diffews-coco --support dog.jpg dog_mask.png --query photos/ --out masks/
  diffews segment --model ./diffews-coco --support a.jpg a.png --support b.jpg b.png --query 'shots/*.jpg' --out out/
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
    parser.add_argument(
        "--threshold", type=float, default=None, metavar="T",
        help="binarisation threshold in [0, 1]; default: the model's (0.25 relative)",
    )
    parser.add_argument(
        "--threshold-mode", choices=THRESHOLD_MODES, default=None,
        help="relative: foreground where p > T x max(p) (authors' evaluation); absolute: p > T",
    )
    parser.add_argument("--resolution", type=int, default=None, metavar="R", help=f"working resolution (multiple of 8, at most {MAX_RESOLUTION}); default: the model's (512)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N", help="queries per model call (default 4)")
    parser.add_argument(
        "--mask-decoder", default=None, metavar="FILE",
        help="small mask decoder from 'diffews distill-decoder' to use instead of the VAE decoder (faster)",
    )
    parser.add_argument(
        "--compile", action="store_true",
        help="torch.compile the model with static batch shapes (slow first batch, faster afterwards)",
    )
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory layout (faster convolutions on GPUs)")
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

    mask_decoder = load_mask_decoder(args.mask_decoder)[0] if args.mask_decoder else None

    with OutputFolder(args.out) as out:
        pipe = load_pipeline(args, SpeedOptions(channels_last=args.channels_last, compile=args.compile, static_batch=args.compile))
        if mask_decoder is not None:
            if mask_decoder.config.latent_channels != pipe.model.vae.config.latent_channels:
                raise InputError(
                    f"{args.mask_decoder}: mask decoder takes {mask_decoder.config.latent_channels} latent channels "
                    f"but the model's VAE has {pipe.model.vae.config.latent_channels}"
                )
            pipe.mask_decoder = mask_decoder.to(pipe.device, pipe.dtype)
        pipe.set_progress_bar_config(disable=True)
        try:
            support = pipe.encode_support(
                support_images, support_masks, sources=[mask for _, mask in args.support], resolution=args.resolution
            )
        except ValueError as error:
            raise InputError(str(error)) from None
        with tqdm(total=len(queries), desc="segmenting", unit="img") as bar:
            for start in range(0, len(queries), args.batch_size):
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
    print(f"wrote {len(queries)} masks and overlays to {out.path}")
    return 0
