"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace

import torch

from ..distributed import Processes
from ..errors import InputError
from ..modeling import DiffewSModel
from ..modeling.config import TORCH_DTYPES as DTYPES
from ..modeling.config import SHOT_FUSIONS, check_resolution
from ..modeling.mask_decoder import load_mask_decoder
from ..modeling.prompt import describe_prompt
from ..modeling.builtin import DEFAULT_MODEL
from ..pipeline import DiffewSPipeline, SpeedOptions
from ..processing.thresholds import THRESHOLD_MODES
from ..registry import MODELS, load_model


logger = logging.getLogger("diffews")
TRUE = ("1", "true", "yes")
"""Values of ACCELERATE_USE_CPU (set by ``accelerate launch --cpu``) that keep a launched run on the CPU."""


def add_model_options(parser: argparse.ArgumentParser, default: str | None = DEFAULT_MODEL) -> None:
    """--model (default: the built-in model), --device, --dtype."""
    parser.add_argument(
        "--model",
        default=default,
        metavar="M",
        help="DiffewS model: a folder written by DiffewSPipeline.save_pretrained, a hub repository id, or a name: "
        + "; ".join(f"'{model.name}' ({model.summary})" for model in MODELS.values())
        + f". Default: {DEFAULT_MODEL}.",
    )
    parser.add_argument("--device", default="auto", help="torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:1, mps")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", *DTYPES],
        help="weights and activations dtype; auto = float16 on CUDA, float32 elsewhere",
    )


def add_prediction_options(parser: argparse.ArgumentParser) -> None:
    """--flip-queries / --no-flip-queries and --shot-fusion: override the model's ``flip_queries`` and
    ``shot_fusion`` settings."""
    parser.add_argument(
        "--flip-queries", action=argparse.BooleanOptionalAction, default=None,
        help="average each query's mask with the mask of its mirrored latents (the query's VAE latents flipped left to "
        "right, the result flipped back; test-time augmentation, twice the query pass); default: the model's "
        "flip_queries setting (off unless its diffews_config.json turns it on)",
    )
    parser.add_argument(
        "--shot-fusion", choices=SHOT_FUSIONS, default=None,
        help="how several supports combine: attention (the method's: the query attends to all of them at once) or mean "
        "(each support predicts alone and the masks are averaged; one query pass per support); default: the model's "
        "shot_fusion setting (attention unless its diffews_config.json says mean)",
    )


def count(minimum: int, maximum: int | None = None):
    """argparse type: an integer from `minimum` (to `maximum`), refused by argparse otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {'at least ' + str(minimum) if maximum is None else f'in {minimum}..{maximum}'}, got {value}")
        return value

    return parse


def output_path(value: str) -> str:
    """argparse type of ``--out``: a path, never empty (an empty one would mean the current folder)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def check_resolution_flag(resolution: int | None) -> None:
    """`InputError` unless `--resolution` is unset or a multiple of 8 in 8..MAX_RESOLUTION."""
    if resolution is not None:
        try:
            check_resolution(resolution)
        except ValueError as error:
            raise InputError(f"--resolution: {error}") from None


def add_threshold_options(parser: argparse.ArgumentParser) -> None:
    """--threshold, --threshold-mode; both default to the model's (`DiffewSConfig.thresholding`)."""
    parser.add_argument(
        "--threshold", type=float, default=None, metavar="T",
        help="binarisation threshold in [0, 1]; default: the model's (relative 0.25 unless its config says otherwise; the built-in model's: 0.005)",
    )
    parser.add_argument(
        "--threshold-mode", choices=THRESHOLD_MODES, default=None,
        help="relative: foreground where p > T x max(p); absolute: p > T; authors: the authors' evaluation rule "
        "(8-bit truncation, channel mean > T x the largest channel value); default: the model's",
    )


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    """--mask-decoder, --compile, --channels-last: how the model runs (the commands that segment share them)."""
    parser.add_argument(
        "--mask-decoder", default=None, metavar="FILE",
        help="small mask decoder from 'diffews distill-decoder' to use instead of the VAE decoder (faster)",
    )
    parser.add_argument(
        "--compile", action="store_true",
        help="torch.compile the model with static batch shapes (slow first batch, faster afterwards)",
    )
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory layout (faster convolutions on GPUs)")


def resolve_device(name: str, processes: Processes = Processes()) -> torch.device:
    """`--device` value -> torch.device, checking that it exists. One of several launched
    `processes` takes the GPU of its local rank for ``auto`` and ``cuda``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in TRUE else "cpu"
    if name == "cuda" and processes.count > 1:
        name = f"cuda:{processes.local_rank}"
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


def load_inference_pipeline(args: argparse.Namespace, processes: Processes = Processes()) -> DiffewSPipeline:
    """The pipeline named by --model with the options of `add_inference_options` (on the GPU of the
    process's local rank, see `resolve_device`); the mask decoder file is read (and checked) before the model."""
    mask_decoder = load_mask_decoder(args.mask_decoder)[0] if args.mask_decoder else None
    speed = SpeedOptions(channels_last=args.channels_last, compile=args.compile, static_batch=args.compile)
    model = load_model_from_args(args, processes)
    try:
        return DiffewSPipeline(model, speed, mask_decoder)
    except ValueError as error:  # the decoder does not fit the model
        raise InputError(f"{args.mask_decoder}: {error}") from None


def load_pipeline(args: argparse.Namespace) -> DiffewSPipeline:
    """The pipeline named by --model on --device/--dtype (reference path, VAE decoder)."""
    return DiffewSPipeline(load_model_from_args(args))


def describe_model(model: DiffewSModel) -> str:
    """The settings that decide a model's output, in one line (logged with --verbose)."""
    config = model.config
    return (
        f"resolution {config.resolution}, t = {config.timestep}, prompt {describe_prompt(config.prompt, model.prompt_embedding.shape[1])}, "
        f"default threshold {config.threshold:g} ({config.threshold_mode}), flipped queries {'on' if config.flip_queries else 'off'}, "
        f"shots fused by {config.shot_fusion}, "
        f"{model.dtype} on {model.device}"
    )


def load_model_from_args(args: argparse.Namespace, processes: Processes = Processes()) -> DiffewSModel:
    """The model named by --model on --device/--dtype (see `resolve_device` for `processes`); its
    settings are logged (seen with --verbose)."""
    model = _load_model(args, processes)
    logger.info("model %s: %s", args.model, describe_model(model))
    return model


def _load_model(args: argparse.Namespace, processes: Processes) -> DiffewSModel:
    device = resolve_device(args.device, processes)
    model = load_model(args.model, torch_dtype=resolve_dtype(args.dtype, device), device=device)
    for name in ("flip_queries", "shot_fusion"):  # the commands that segment have --flip-queries and --shot-fusion
        if getattr(args, name, None) is not None:
            model.config = replace(model.config, **{name: getattr(args, name)})
    return model
