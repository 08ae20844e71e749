"""Entry point of the `diffews` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from .. import __version__
from ..errors import InputError
from ..io import STORAGE_ERRORS
from ..signals import STOP_SIGNALS, forget_stop_request, raise_if_stop_requested, request_stop
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
    for command in subparsers.choices.values():  # also after the command: `diffews segment --verbose`
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="same as diffews --verbose")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status: 0, 2 for bad input, a full disk
    (`STORAGE_ERRORS`) or another failure on a named file (no permission, say), 128 + N after signal N
    (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP) once the run has cleaned up."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.DEBUG if args.verbose else logging.WARNING)
    if not args.verbose:
        _quiet_libraries()
    previous = _raise_on_termination_signals()
    try:
        try:
            status = args.run(args)
            raise_if_stop_requested()  # a stop that a finaliser swallowed, in a run that made nothing final after it
            return status
        except InputError as error:
            raise_if_stop_requested()  # a stop that a finaliser swallowed came first: it decides the exit status
            message = f"error: {error}"
        except OSError as error:
            raise_if_stop_requested()
            where = f"{error.filename}: " if error.filename else ""
            if error.errno in STORAGE_ERRORS:
                message = f"error: {where}cannot write ({error.strerror})"
            elif where:  # the user's file system said no: a folder they cannot read, a file gone meanwhile
                message = f"error: {where}{error.strerror}"
            else:
                raise
        # printed once the failed run's frames are gone, so a progress bar they held closes before, not after it
        print(message, file=sys.stderr)
        return 2
    except KeyboardInterrupt as error:
        signum = getattr(error, "signum", signal.SIGINT)
        print("interrupted" if signum == signal.SIGINT else f"terminated ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        forget_stop_request()


def _raise_on_termination_signals() -> dict[int, object]:
    """Make SIGINT raise `KeyboardInterrupt` and `TERMINATION_SIGNALS` raise `Terminated` in the main
    thread, once: a signal that arrives after the first, while the run cleans up (removing partial
    outputs, putting back the files a re-run replaced), is reported and ignored, so the clean-up
    always finishes (SIGKILL still stops at once). The first is recorded (`request_stop`): one that
    Python drops because it landed in a finaliser is raised again before the run makes anything final.
    Returns the previous handlers (none outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum: int, frame: object) -> None:
        for other in STOP_SIGNALS:
            signal.signal(other, cleaning_up)
        raise request_stop(signum)

    def cleaning_up(signum: int, frame: object) -> None:
        print(f"{signal.Signals(signum).name} ignored: cleaning up", file=sys.stderr)

    return {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}


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
