"""`diffews init-model`: a from-scratch DiffewS model folder (trained VAE + random UNet) to start training from."""

from __future__ import annotations

import argparse

from ..modeling.convert import save_new_folder
from ..modeling.scratch import PROMPT_KINDS, build_scratch_model
from .common import check_resolution_flag, output_path

DESCRIPTION = """\
Write a DiffewS model folder built from scratch: the autoencoder trained by 'diffews
train-autoencoder', a randomly initialised UNet of Stable Diffusion 2.1's structure (widths from a
diffusers UNet config) with the support convolution conv_in_ref, and a constant prompt embedding in
the place of the text encoder's (random: standard normal values from --prompt-seed; zeros: all zeros).
Train it with 'diffews train --pretrained <folder>'. Untrained, its masks are meaningless (a baseline).
"""

EPILOG = """\
example:
  diffews init-model --vae outputs/icons-ae/vae --unet-config configs/icons/unet.json --resolution 128 --out outputs/icons-init
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "init-model", help="build a from-scratch DiffewS model folder (trained VAE + random UNet)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--vae", required=True, metavar="DIR", help="autoencoder folder (diffusers AutoencoderKL, safetensors)")
    parser.add_argument("--unet-config", required=True, metavar="JSON", help="diffusers UNet2DConditionModel config file")
    parser.add_argument("--resolution", type=int, required=True, metavar="R", help="working resolution (multiple of 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the UNet's initialisation (default 0)")
    parser.add_argument("--prompt", choices=PROMPT_KINDS, default="random", help="constant prompt embedding (default random)")
    parser.add_argument("--prompt-seed", type=int, default=0, help="seed of the random prompt embedding (default 0)")
    parser.add_argument("--out", type=output_path, required=True, metavar="DIR", help="new model folder (must not exist, or be empty)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_resolution_flag(args.resolution)
    model = build_scratch_model(args.vae, args.unet_config, args.resolution, args.seed, args.prompt, args.prompt_seed)
    out = save_new_folder(model, args.out)
    unet_params = sum(p.numel() for p in model.unet.parameters())
    print(f"wrote {out} (UNet {unet_params / 1e6:.2f} M parameters, {len(model.fsa_layers)} FSA layers)")
    return 0
