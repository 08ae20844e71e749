"""`diffews app`: the local web app (needs the `app` extra: Gradio)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError, first_line
from ..paths import user_path
from ..signals import raise_if_stop_requested
from .common import add_model_options, add_prediction_options, load_pipeline

DESCRIPTION = """\
Start a local web page for few-shot segmentation: add one to five example images with their
masks (uploaded or painted), drop in query images, see overlays, download the masks.
Listens on 127.0.0.1 only unless --host says otherwise. Needs: pip install 'diffews[app]'.
"""

EPILOG = """\
examples:
  diffews app --model ./diffews-coco
  diffews app --model tiny-random --port 7861       # random weights: checks the installation only
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "app", help="start the local web app", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    add_prediction_options(parser)
    parser.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes the app to the network)",
    )
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    parser.add_argument(
        "--examples", default=None, metavar="DIR",
        help="folder with support/ (IMG.jpg + IMG_mask.png) and query/ images for the pre-filled example; "
        "default: the examples/ folder of a source checkout, if there is one",
    )
    parser.add_argument("--batch-size", type=int, default=4, metavar="N", help="queries per model call (default 4)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise InputError(f"--port must be in 1..65535, got {args.port}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.examples is not None:
        args.examples = user_path(args.examples)
        if not args.examples.is_dir():
            raise InputError(f"{args.examples}: no such folder (--examples)")
    check_can_listen(args.host, args.port)
    with tempfile.TemporaryDirectory(prefix="diffews-app-") as root, _gradio_files_inside(Path(root)):  # gone when the app stops
        try:
            from ..app import ui
        except ImportError as error:
            raise InputError(f"the app needs Gradio ({error}); install it with: pip install 'diffews[app]'") from None
        if args.examples is not None and not all(ui.example_files(args.examples)):
            raise InputError(
                f"{args.examples}: no example in it (--examples): it needs support/IMG.jpg with support/IMG_mask.png, and query/*.jpg"
            )
        pipe = load_pipeline(args)
        pipe.set_progress_bar_config(disable=True)
        demo = ui.build_app(pipe, args.model, Path(root), args.examples or ui.default_examples_dir(), args.batch_size)
        try:
            url = ui.launch(demo, args.host, args.port, Path(root))
        except OSError:  # taken between the check above and now; the server's own text names its internals
            raise InputError(f"--port {args.port}: cannot serve on {args.host}:{args.port} (in use?); choose another --port") from None
        except Exception as error:  # the server did not answer its own start-up check
            demo.close()
            raise InputError(f"--host {args.host}: the web server did not start on {args.host}:{args.port} ({first_line(error)})") from None
        print(f"diffews app running at {url} (Ctrl+C to stop)", flush=True)
        try:
            while demo.is_running:  # not Gradio's block_thread: it swallows Ctrl+C and SIGTERM, so the exit status said 0
                raise_if_stop_requested()
                time.sleep(0.2)
        finally:
            demo.close()
    return 0


@contextlib.contextmanager
def _gradio_files_inside(root: Path) -> Iterator[None]:
    """Within the block, Gradio keeps its files (uploads, caches) in ``root/gradio`` (``GRADIO_TEMP_DIR``,
    read when Gradio is imported and when the page is built); a ``GRADIO_TEMP_DIR`` the user set is kept."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        yield
        return
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")
    try:
        yield
    finally:
        os.environ.pop("GRADIO_TEMP_DIR", None)


def check_can_listen(host: str, port: int) -> None:
    """`InputError` naming --port (in use) or --host (not an address of this machine) unless
    `host`:`port` can be bound now, before minutes are spent loading the model."""
    if ":" in host:  # the web server builds its own URL as http://HOST:PORT, which an IPv6 address breaks
        raise InputError(f"--host {host}: IPv6 addresses are not supported; use 127.0.0.1 (this machine) or 0.0.0.0 (the network)")
    try:
        with socket.socket(socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise InputError(f"--port {port}: {host}:{port} is already in use by another program; choose another --port") from None
        raise InputError(f"--host {host}: cannot listen on {host}:{port} ({error.strerror or error})") from None
