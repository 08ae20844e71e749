"""The data builders' process pools: Ctrl-C is the main process's, a failure cancels the tasks not begun."""

from __future__ import annotations

import signal
import time

import pytest

from diffews.data.workers import process_pool


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
