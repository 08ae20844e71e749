"""`diffews distill-decoder`: train a small mask decoder from a model's VAE decoder."""

from __future__ import annotations

import argparse
import math
import time

import torch

from ..distillation import distill_mask_decoder, evaluate_mask_decoder
from ..errors import InputError
from ..modeling.mask_decoder import MaskDecoderConfig, check_mask_decoder_target, save_mask_decoder
from ..paths import user_path
from .common import add_model_options, check_resolution_flag, count, load_model_from_args, output_path

DESCRIPTION = """\
Train a small mask decoder that replaces the VAE decoder when segmenting (diffews segment
--mask-decoder FILE). Needs no data: random masks are encoded with the model's VAE and the student
learns to reproduce the full decoder's probabilities. Reports the IoU of its masks against the
full decoder's on held-out generated masks, and the decoding speed-up, and stores both in the file.
"""

EPILOG = """\
example:
  diffews distill-decoder --model ./diffews-coco --out mask_decoder.safetensors --steps 3000
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "distill-decoder",
        help="train a small, fast mask decoder from the model's VAE decoder",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    parser.add_argument("--out", type=output_path, required=True, metavar="FILE", help="output .safetensors file")
    parser.add_argument("--steps", type=int, default=2000, metavar="N", help="training steps (default 2000)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="generated masks per step (default 8)")
    parser.add_argument("--lr", type=float, default=1e-3, metavar="LR", help="AdamW learning rate, cosine decay (default 1e-3)")
    parser.add_argument(
        "--widths", type=int, nargs="+", default=list(MaskDecoderConfig().widths), metavar="C",
        help="channels of each x2 upsampling stage; one stage per halving of the VAE (default 128 64 32)",
    )
    parser.add_argument("--resolution", type=int, default=None, metavar="R", help="mask size in pixels; default: the model's working resolution")
    parser.add_argument("--eval-masks", type=int, default=64, metavar="N", help="held-out generated masks for the IoU (default 64)")
    parser.add_argument("--seed", type=count(0, 2**32 - 1), default=0, help="random seed (default 0)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for name in ("steps", "batch_size", "eval_masks"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not math.isfinite(args.lr) or args.lr <= 0:
        raise InputError(f"--lr must be a positive number, got {args.lr}")
    if min(args.widths) < 1:
        raise InputError(f"--widths must be at least 1 channel each, got {' '.join(map(str, args.widths))}")
    check_resolution_flag(args.resolution)
    out = user_path(args.out)
    check_mask_decoder_target(out)
    model = load_model_from_args(args)
    vae = model.vae.config
    factor = 2 ** (len(vae.block_out_channels) - 1)
    if 2 ** len(args.widths) != factor:
        raise InputError(f"--widths: give {factor.bit_length() - 1} stages for this VAE (downsampling x{factor}), got {len(args.widths)}")
    config = MaskDecoderConfig(vae.latent_channels, tuple(args.widths), vae.scaling_factor)
    decoder = distill_mask_decoder(
        model, config, steps=args.steps, batch_size=args.batch_size, resolution=args.resolution,
        learning_rate=args.lr, seed=args.seed,
    )
    metrics = evaluate_mask_decoder(model, decoder, count=args.eval_masks, resolution=args.resolution, seed=args.seed + 1)
    metrics.update(decode_speedup(model, decoder, args.resolution or model.config.resolution))
    path = save_mask_decoder(decoder, out, metrics)
    print(
        f"mask decoder IoU vs the full VAE decoder: mean {metrics['iou_vs_vae_decoder']:.4f}, "
        f"min {metrics['min_iou_vs_vae_decoder']:.4f}, mean |p - p_vae| {metrics['mean_abs_probability_error']:.4f} "
        f"on {metrics['eval_masks']} held-out generated masks; "
        f"decoding {metrics['decode_speedup']:.1f}x faster; wrote {path}"
    )
    return 0


@torch.no_grad()
def decode_speedup(model, decoder, resolution: int, repeats: int = 3) -> dict[str, float]:
    """Median wall-clock ratio, full VAE decoder / mask decoder, on one latent at `resolution`."""
    latent = torch.zeros(1, model.vae.config.latent_channels, resolution // 8, resolution // 8, device=model.device)

    def seconds(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            if latent.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if latent.is_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]

    full, small = seconds(lambda: model.decode_probabilities(latent)), seconds(lambda: decoder(latent))
    return {"decode_speedup": full / small, "vae_decode_ms": 1000 * full, "mask_decoder_ms": 1000 * small}
