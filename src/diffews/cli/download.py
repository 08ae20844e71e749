"""`diffews download`: one of the authors' released models, fetched and converted into the cache."""

from __future__ import annotations

import argparse

from ..home import HOME_ENV
from ..modeling.weights import SD21_HUB_ID
from ..release import AUTHORS_REPOSITORY, RELEASES, download_model
from .convert import add_pickle_option, add_prompt_option

DESCRIPTION = f"""\
Fetch one of the authors' released DiffewS models and convert it, once, into
${HOME_ENV}/models/<name> (default ~/.cache/diffews/models/<name>); afterwards
--model <name> loads it in every command. The fine-tuned UNet comes from the authors' ModelScope
repository {AUTHORS_REPOSITORY} (needs pip install 'diffews[modelscope]'); the VAE and text
encoder from Stable Diffusion 2.1 (--base, default {SD21_HUB_ID}, through
huggingface_hub). Interrupted downloads resume; two processes never convert the same model
at once. Offline or refused: the error says how to place the files by hand (--authors, --base).

models:
""" + "\n".join(f"  {release.name:<11} {release.use}" for release in RELEASES.values())

EPILOG = """\
examples:
  diffews download incontext
  diffews download coco-fold0 --authors Diffews        # UNet from a git-lfs clone of the authors' repository
  diffews download incontext --base /models/sd-2-1      # a local Stable Diffusion 2.1 folder
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download",
        help="fetch and convert one of the authors' released models (incontext, coco-fold0..3)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=list(RELEASES), metavar="NAME", help=f"one of: {', '.join(RELEASES)}")
    parser.add_argument("--base", default=SD21_HUB_ID, metavar="PATH_OR_HUB_ID", help=f"Stable Diffusion 2.1 (default {SD21_HUB_ID})")
    parser.add_argument("--authors", metavar="DIR", help="take the UNet from this clone of the authors' repository instead of downloading it")
    add_prompt_option(parser)
    add_pickle_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    download_model(args.name, args.base, args.authors, report=lambda line: print(line, flush=True), prompt=args.prompt,
                   allow_pickle=args.allow_pickle)
    return 0
