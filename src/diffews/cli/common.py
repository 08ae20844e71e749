"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import logging

import torch

from ..errors import InputError
from ..modeling.config import TORCH_DTYPES as DTYPES
from ..modeling.config import check_resolution
from ..modeling.tiny import TINY_RANDOM
from ..pipeline import DiffewSPipeline, SpeedOptions


logger = logging.getLogger("diffews")


def add_model_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """--model, --device, --dtype."""
    parser.add_argument(
        "--model",
        required=required,
        metavar="M",
        help="DiffewS model: a folder written by DiffewSPipeline.save_pretrained, or a hub repository id. "
        f"'{TINY_RANDOM}' builds a tiny random-weight model that only checks the installation "
        "(its masks are meaningless).",
    )
    parser.add_argument("--device", default="auto", help="torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:1, mps")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", *DTYPES],
        help="weights and activations dtype; auto = float16 on CUDA, float32 elsewhere",
    )


def check_resolution_flag(resolution: int | None) -> None:
    """`InputError` unless `--resolution` is unset or a multiple of 8 in 8..MAX_RESOLUTION."""
    if resolution is not None:
        try:
            check_resolution(resolution)
        except ValueError as error:
            raise InputError(f"--resolution: {error}") from None


def resolve_device(name: str) -> torch.device:
    """`--device` value -> torch.device, checking that it exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise InputError(f"--device {name}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`--dtype` value -> torch dtype."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def load_pipeline(args: argparse.Namespace, speed: SpeedOptions | None = None) -> DiffewSPipeline:
    """The pipeline named by --model on --device/--dtype, with optional speed options."""
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if args.model == TINY_RANDOM:
        from ..modeling import build_tiny_model

        logger.warning(
            "%s: random weights, the masks are meaningless; this only checks that diffews runs. "
            "See the README for the weights a real run needs.",
            TINY_RANDOM,
        )
        return DiffewSPipeline(build_tiny_model().to(device, dtype), speed)
    return DiffewSPipeline.from_pretrained(args.model, torch_dtype=dtype, device=device, speed=speed)
