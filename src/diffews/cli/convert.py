"""`diffews convert`: turn the authors' released DiffewS checkpoints into diffews model folders."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import InputError
from ..modeling.config import DiffewSConfig
from ..modeling.convert import check_new_folder, convert_authors_checkpoint, converted_model_card, save_new_folder
from ..modeling.prompt import PROMPT_AUTHORS_EVAL, TEXT_PROMPTS
from ..modeling.weights import SD21_HUB_ID
from ..release import convert_clone
from ..release.layout import AUTHORS_BASE_FOLDER
from .common import output_path

DESCRIPTION = f"""\
Convert the authors' DiffewS checkpoints (fine-tuned unet/ folders with conv_in_ref) into diffews
model folders, safetensors only, that DiffewSPipeline.from_pretrained and every diffews command load.
The VAE and the empty-prompt embedding come from the base (Stable Diffusion 2.1). The stored embedding
is, by default, the one the authors' evaluation used (the empty prompt without padding, 2 tokens):
with --threshold-mode authors the model then computes what their evaluation computes. A UNet whose
weights are only a pickled .bin is read only with --allow-pickle (torch.load(weights_only=True),
refused unless it holds tensors only).

--unet converts one unet/ folder. --authors converts a clone of the authors' weights: every folder
holding unet/ (their incontext/, coco_fold0/ ... coco_fold3/; the UNet in unet/ or unet/unet/) becomes
OUT/<folder name>; the base defaults to the folder inside the clone holding vae/ and text_encoder/
(theirs: {AUTHORS_BASE_FOLDER}/).
"""

EPILOG = f"""\
examples:
  diffews convert --unet Diffews/weight/coco_fold0/unet --base {SD21_HUB_ID} --out models/coco_fold0
  diffews convert --authors Diffews --out models                       # all five models, base from the clone
  diffews convert --authors Diffews --variant incontext --base {SD21_HUB_ID} --out models
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert the authors' released checkpoints into diffews model folders",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--unet", metavar="PATH", help="one of the authors' unet/ folders (config.json + weights)")
    source.add_argument("--authors", metavar="DIR", help="a clone of the authors' weights: converts every model folder in it")
    parser.add_argument(
        "--base",
        metavar="PATH_OR_HUB_ID",
        help=f"Stable Diffusion 2.1: a diffusers folder or hub id (e.g. {SD21_HUB_ID}) with vae/ and text_encoder/; "
        "required with --unet; with --authors, default: the base folder inside DIR",
    )
    parser.add_argument("--out", type=output_path, required=True, metavar="DIR", help="--unet: the new model folder (must not exist, or be empty); --authors: the folder of the models")
    parser.add_argument("--variant", action="append", metavar="NAME", help="with --authors: convert only this model folder (e.g. incontext; repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="with --authors: replace existing OUT/<name> model folders (default: skip them)")
    parser.add_argument("--resolution", type=int, default=512, metavar="R", help="working resolution stored with the model (default 512, the authors')")
    add_prompt_option(parser)
    add_pickle_option(parser)
    parser.set_defaults(run=run)


def add_prompt_option(parser: argparse.ArgumentParser) -> None:
    """--prompt: which empty-prompt embedding a converted model stores."""
    parser.add_argument(
        "--prompt", choices=TEXT_PROMPTS, default=PROMPT_AUTHORS_EVAL,
        help="empty-prompt embedding to store: authors-eval (default; unpadded, 2 tokens, as the authors evaluated: "
        "reproduces the paper) or padded (77 tokens, as they trained)",
    )


def add_pickle_option(parser: argparse.ArgumentParser) -> None:
    """--allow-pickle: read a UNet whose weights are only a pickled .bin."""
    parser.add_argument(
        "--allow-pickle", action="store_true",
        help="read a UNet whose weights are only a pickled diffusion_pytorch_model.bin, with torch's restricted loader "
        "(weights_only=True, tensors only); a pickle can run code when loaded, so use it only for files you trust",
    )


def conversion_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `convert_authors_checkpoint` that the options give: the one place where
    conversion settings are collected, for --unet and --authors alike."""
    try:
        config = DiffewSConfig(resolution=args.resolution)
    except ValueError as error:
        raise InputError(f"--resolution: {error}") from None
    return {"config": config, "prompt": args.prompt, "allow_pickle": args.allow_pickle}


def run(args: argparse.Namespace) -> int:
    options = conversion_options(args)
    if args.authors is not None:
        outputs = convert_clone(args.authors, args.out, args.base, args.variant, args.overwrite, report=_progress, **options)
        print(f"{len(outputs)} model(s) in {args.out}; load one with --model {next(iter(outputs.values()))}")
        return 0
    if args.base is None:
        raise InputError(f"--unet needs --base (Stable Diffusion 2.1, e.g. {SD21_HUB_ID} or a local folder)")
    if args.variant or args.overwrite:
        raise InputError("--variant and --overwrite apply to --authors only")
    check_new_folder(args.out)  # before minutes of loading
    model = convert_authors_checkpoint(args.unet, args.base, **options)
    out = save_new_folder(model, args.out, card=converted_model_card(model))
    tokens = model.prompt_embedding.shape[1]
    print(f"wrote {out} ({len(model.fsa_layers)} FSA layers, prompt {model.config.prompt}: {tokens} tokens); load it with DiffewSPipeline.from_pretrained({str(out)!r})")
    return 0


def _progress(line: str) -> None:
    print(line, flush=True)
