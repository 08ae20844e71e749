"""The signals that stop a run, for the command line (which turns them into exceptions) and for the
worker processes of the data builders (which leave them to the main process)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

TERMINATION_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
"""Signals that stop a run the way Ctrl-C (SIGINT) does: `timeout`, systemd and job schedulers send SIGTERM,
a closed terminal SIGHUP."""

STOP_SIGNALS = (signal.SIGINT, *TERMINATION_SIGNALS)
"""Ctrl-C and the termination signals."""

Item = TypeVar("Item")


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C's `KeyboardInterrupt`, so every
    clean-up that runs for Ctrl-C (removing partial outputs, saving progress) runs for them too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    def __reduce__(self) -> tuple:
        return Terminated, (self.signum,)  # pickled by its number: a worker process's exception travels so


_requested: list[int] = []
"""The stop signal of the running command, once one arrived (see `request_stop`)."""


def request_stop(signum: int) -> KeyboardInterrupt:
    """Record that stop signal `signum` arrived and return the exception that stops the run
    (`KeyboardInterrupt` for SIGINT, `Terminated` for the others), for a signal handler to raise.

    Python drops an exception raised inside a finaliser (an object's ``__del__``, a weakref callback)
    and goes on, so a signal that lands there would be lost; the record lets `raise_if_stop_requested`
    raise it again where a run makes its outputs final and between the steps of long work."""
    _requested[:] = [signum]
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def raise_if_stop_requested() -> None:
    """Raise the stop exception again if a stop signal arrived (see `request_stop`); nothing otherwise,
    nothing outside the command line, which alone turns signals into exceptions, and nothing outside
    the main thread, where Python raises them (the app's request threads finish their work)."""
    if _requested and threading.current_thread() is threading.main_thread():
        raise request_stop(_requested[0])


def until_stopped(items: Iterable[Item]) -> Iterator[Item]:
    """`items`, raising a recorded stop signal before each (`raise_if_stop_requested`): the loops of long work."""
    for item in items:
        raise_if_stop_requested()
        yield item


def forget_stop_request() -> None:
    """Forget the stop signal of a command that has ended (the command line's next run in the same
    process starts afresh)."""
    _requested.clear()


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
