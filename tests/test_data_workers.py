"""The data builders' process pools: Ctrl-C is the main process's, a failure cancels the tasks not begun."""

from __future__ import annotations

import os
import signal
import time

import pytest

from diffews.data.workers import process_pool
from diffews.errors import InputError


def stop_signals_are_ignored(_: int) -> bool:
    return all(signal.getsignal(signum) == signal.SIG_IGN for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP))


def test_workers_ignore_ctrl_c_and_termination():
    with process_pool(2) as pool:
        assert list(pool.map(stop_signals_are_ignored, range(4))) == [True] * 4


def test_a_failure_in_the_block_cancels_the_tasks_not_begun():
    with pytest.raises(KeyboardInterrupt):
        with process_pool(1) as pool:
            futures = [pool.submit(time.sleep, 0.2) for _ in range(20)]
            raise KeyboardInterrupt
    assert futures[-1].cancelled()


def die(_: int) -> None:
    os._exit(9)  # what the out-of-memory killer leaves of a worker


def test_a_worker_that_dies_is_one_line():
    with pytest.raises(InputError, match=r"^a worker process died \(killed, or out of memory\) or could not start; try fewer --workers than 2$"):
        with process_pool(2) as pool:
            list(pool.map(die, range(2)))
