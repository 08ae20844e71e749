"""Process pools of the data builders, whose workers leave Ctrl-C and termination to the main process.

Ctrl-C reaches every process of the terminal's group, as do a closed terminal's SIGHUP and a job
scheduler's SIGTERM: the main process undoes the build (`diffews.io.new_folder`); the workers ignore
them, finish the task in hand and stop, without printing a traceback each, and the tasks not begun
are cancelled.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from ..signals import STOP_SIGNALS


def _start_worker(initializer: Callable[..., None] | None, *initargs: Any) -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)


@contextlib.contextmanager
def process_pool(workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> Iterator[ProcessPoolExecutor]:
    """A `ProcessPoolExecutor` of `workers` processes (each runs `initializer(*initargs)` first); if the
    block fails, interrupts included, the tasks not yet begun are cancelled before it waits for the workers."""
    pool = ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(initializer, *initargs))
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
