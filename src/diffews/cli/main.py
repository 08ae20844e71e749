"""Entry point of the `diffews` command."""

from __future__ import annotations

import argparse
import logging
import sys

from .. import __version__
from ..errors import InputError
from . import app, convert, data, distill_decoder, download, evaluate, init_model, segment, train, train_autoencoder

DESCRIPTION = """\
diffews: few-shot semantic segmentation with DiffewS, a one-step latent diffusion model.
Give a few example images of a class with their masks; get that class segmented in new images.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffews", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"diffews {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library warnings and debug details")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    segment.add_parser(subparsers)
    evaluate.add_parser(subparsers)
    data.add_parser(subparsers)
    train.add_parser(subparsers)
    train_autoencoder.add_parser(subparsers)
    init_model.add_parser(subparsers)
    convert.add_parser(subparsers)
    download.add_parser(subparsers)
    distill_decoder.add_parser(subparsers)
    app.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.DEBUG if args.verbose else logging.WARNING)
    if not args.verbose:
        _quiet_libraries()
    try:
        return args.run(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    # Their weight-loading bars would interleave with ours; `--verbose` keeps them.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
