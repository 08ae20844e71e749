"""Process pools of the data builders, whose workers leave Ctrl-C and termination to the main process.

Ctrl-C reaches every process of the terminal's group, as do a closed terminal's SIGHUP and a job
scheduler's SIGTERM: the main process undoes the build (`diffews.io.new_folder`); the workers ignore
them, finish the task in hand and stop, without printing a traceback each, and the tasks not begun
are cancelled. A main process killed outright (SIGKILL, the out-of-memory killer) tells its workers
nothing: each one notices its parent is gone within `PARENT_CHECK_SECONDS` and exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from tqdm.auto import tqdm

from ..errors import InputError
from ..signals import STOP_SIGNALS, until_stopped

Job = TypeVar("Job")
Result = TypeVar("Result")


PARENT_CHECK_SECONDS = 1.0
"""How often a worker checks that the process that started it is still there."""


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def _start_worker(initializer: Callable[..., None] | None, *initargs: Any) -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), name="diffews-orphan-check", daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


@contextlib.contextmanager
def process_pool(workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> Iterator[ProcessPoolExecutor]:
    """A `ProcessPoolExecutor` of `workers` processes (each runs `initializer(*initargs)` first); if the
    block fails, interrupts included, the tasks not yet begun are cancelled before it waits for the workers.

    Raises:
        InputError: a worker process died (killed, or out of memory) or could not start.
    """
    pool = ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(initializer, *initargs))
    try:
        yield pool
    except BaseException as error:
        pool.shutdown(wait=True, cancel_futures=True)
        if isinstance(error, BrokenProcessPool):
            raise InputError(f"a worker process died (killed, or out of memory) or could not start; try fewer --workers than {workers}") from None
        raise
    pool.shutdown(wait=True)


def run_jobs(
    function: Callable[[Job], Result],
    jobs: Sequence[Job],
    workers: int,
    desc: str,
    unit: str,
    chunksize: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> list[Result]:
    """``function(job)`` for every job, in order, with a progress bar: in this process when `workers` is 1
    (after ``initializer(*initargs)``), else in a `process_pool` of `workers`, `chunksize` jobs at a time."""
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        return [function(job) for job in until_stopped(tqdm(jobs, desc=desc, unit=unit))]
    with process_pool(workers, initializer, initargs) as pool:
        return list(until_stopped(tqdm(pool.map(function, jobs, chunksize=chunksize), total=len(jobs), desc=desc, unit=unit)))
