"""`diffews convert`: turn the authors' released DiffewS checkpoint into a diffews model folder."""

from __future__ import annotations

import argparse

from ..errors import InputError
from ..modeling.config import DiffewSConfig
from ..modeling.convert import convert_authors_checkpoint, save_new_folder

DESCRIPTION = """\
Convert an authors' DiffewS checkpoint (a fine-tuned unet/ folder with conv_in_ref) into a diffews
model folder, safetensors only, that DiffewSPipeline.from_pretrained and every diffews command load.
The VAE and the empty-prompt embedding come from --base (Stable Diffusion 2.1). A pickled .bin UNet is
read with torch.load(weights_only=True) and refused unless it holds tensors only.
"""

EPILOG = """\
example:
  diffews convert --unet checkpoints/coco_fold0/unet --base stabilityai/stable-diffusion-2-1 --out models/diffews-coco-fold0
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert the authors' released checkpoint into a diffews model folder",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--unet", required=True, metavar="PATH", help="the authors' unet/ folder (config.json + weights)")
    parser.add_argument("--base", required=True, metavar="PATH_OR_HUB_ID", help="Stable Diffusion 2.1: a diffusers folder or hub id (vae/, text_encoder/)")
    parser.add_argument("--out", required=True, metavar="DIR", help="new model folder (must not exist, or be empty)")
    parser.add_argument("--resolution", type=int, default=512, metavar="R", help="working resolution stored with the model (default 512, the authors')")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = DiffewSConfig(resolution=args.resolution)
    except ValueError as error:
        raise InputError(f"--resolution: {error}") from None
    model = convert_authors_checkpoint(args.unet, args.base, config)
    out = save_new_folder(model, args.out)
    print(f"wrote {out} ({len(model.fsa_layers)} FSA layers); load it with DiffewSPipeline.from_pretrained({str(out)!r})")
    return 0
