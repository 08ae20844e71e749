"""`diffews train-autoencoder`: train a small latent autoencoder for a DiffewS model built from scratch."""

from __future__ import annotations

import argparse

from ..training.autoencoder import AE_SECTIONS, AutoencoderConfig
from ..training.config import add_config_flags, overrides_from_args

DESCRIPTION = """\
Train a small AutoencoderKL (4 latent channels, /8 downsampling) on a benchmark's images and masks
(masks as white-on-black images, as DiffewS encodes them), for a DiffewS model trained from scratch
where Stable Diffusion's VAE is not used. Writes <output_dir>/vae (a diffusers folder, safetensors)
with autoencoder_report.json: validation image PSNR and mask round-trip IoU at every save.
Options come from --config (YAML) and are overridden by flags.
"""

EPILOG = """\
example:
  diffews train-autoencoder --config configs/icons/autoencoder.yaml --root data/iconbench/fold0
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-autoencoder", help="train a small latent autoencoder (for a DiffewS model from scratch)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="YAML", help="config file; flags below override its values")
    parser.add_argument("--print-config", action="store_true", help="print the resolved configuration as YAML and exit")
    add_config_flags(parser, AE_SECTIONS)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = AutoencoderConfig.load(args.config, overrides_from_args(args, AE_SECTIONS))
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    from ..training.autoencoder import train_autoencoder

    folder = train_autoencoder(config)
    print(f"trained autoencoder: {folder}")
    return 0
