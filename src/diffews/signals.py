"""The signals that stop a run, for the command line (which turns them into exceptions) and for the
worker processes of the data builders (which leave them to the main process)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

TERMINATION_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
"""Signals that stop a run the way Ctrl-C (SIGINT) does: `timeout`, systemd and job schedulers send SIGTERM,
a closed terminal SIGHUP."""

STOP_SIGNALS = (signal.SIGINT, *TERMINATION_SIGNALS)
"""Ctrl-C and the termination signals."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C's `KeyboardInterrupt`, so every
    clean-up that runs for Ctrl-C (removing partial outputs, saving progress) runs for them too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold the stop signals back while the block runs (a clean-up that must finish, such as putting back
    the files a run replaced): one that arrives meanwhile is delivered again when the block ends, to the
    handler it would have met at once. Outside the main thread, where no handler runs, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: held.append(signum)) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: one set outside Python
        if held:
            signal.raise_signal(held[0])
