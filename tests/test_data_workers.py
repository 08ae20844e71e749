"""The data builders' process pools: Ctrl-C is the main process's, a failure cancels the tasks not begun,
workers do not outlive a killed main process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffews.data.workers import PARENT_CHECK_SECONDS, process_pool
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


ORPHANED_POOL = """
import os, sys, time
from diffews.data.workers import PARENT_CHECK_SECONDS, process_pool

def report_and_wait(path):
    with open(path + ".part", "w") as file:
        file.write(str(os.getpid()))
    os.replace(path + ".part", path)
    time.sleep(60)

if __name__ == "__main__":
    with process_pool(1) as pool:
        pool.submit(report_and_wait, sys.argv[1])
        time.sleep(60)
"""


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, dead but not yet reaped, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process states from /proc (Linux)")
def test_workers_exit_when_the_main_process_is_killed_outright(tmp_path):
    script, pid_file = tmp_path / "pool.py", tmp_path / "worker.pid"
    script.write_text(ORPHANED_POOL)
    main = subprocess.Popen([sys.executable, str(script), str(pid_file)])
    try:
        deadline = time.monotonic() + 60
        while not pid_file.is_file() and time.monotonic() < deadline and main.poll() is None:
            time.sleep(0.05)
        worker = int(pid_file.read_text())
    finally:
        main.kill()  # SIGKILL: no clean-up runs in the main process
        main.wait()
    deadline = time.monotonic() + 10 * PARENT_CHECK_SECONDS
    while running(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = running(worker)
    if alive:
        os.kill(worker, signal.SIGKILL)
    assert not alive, "the worker outlived its killed main process"
