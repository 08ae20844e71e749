"""`diffews.signals`: a recorded stop signal is raised again where a run would otherwise go on."""

from __future__ import annotations

import pickle
import signal
import threading

import pytest

from diffews import io, signals
from diffews.data.workers import run_jobs
from diffews.distributed import Processes


@pytest.fixture
def stopped(monkeypatch):
    """A SIGTERM recorded as the command line records it (and forgotten after the test)."""
    monkeypatch.setattr(signals, "_requested", [])
    signals.request_stop(signal.SIGTERM)


def test_the_stop_is_raised_in_the_main_thread_only(stopped):
    """The app's request threads (and any library work beside the command) finish what they do."""
    raised = []
    thread = threading.Thread(target=lambda: raised.append(_raises()))
    thread.start()
    thread.join()
    assert raised == [False] and _raises()


def _raises() -> bool:
    try:
        signals.raise_if_stop_requested()
    except signals.Terminated:
        return True
    return False


def test_terminated_survives_pickling_as_a_worker_process_exception_does():
    error = pickle.loads(pickle.dumps(signals.Terminated(signal.SIGHUP)))
    assert isinstance(error, signals.Terminated) and error.signum == signal.SIGHUP


def test_a_job_loop_stops_before_its_next_job(monkeypatch):
    monkeypatch.setattr(signals, "_requested", [])
    done = []

    def job(number: int) -> int:
        done.append(number)
        if number == 1:
            signals.request_stop(signal.SIGTERM)  # the handler's exception was dropped
        return number

    with pytest.raises(signals.Terminated):
        run_jobs(job, [0, 1, 2, 3], workers=1, desc="jobs", unit="job", chunksize=1)
    assert done == [0, 1]


def test_an_output_folder_gives_up_before_its_last_barrier(tmp_path, monkeypatch):
    """With several processes a folder is kept only if all of them reach the last barrier: a process with a
    recorded stop must fail before it (so the others undo their files too), not after (they would keep theirs)."""
    monkeypatch.setattr(signals, "_requested", [])
    barriers = []
    monkeypatch.setattr(Processes, "barrier", lambda self: barriers.append(1))
    with pytest.raises(signals.Terminated):
        with io.OutputFolder(tmp_path / "out") as out:
            with out.write("a.txt") as staged:
                staged.write_text("a")
            entered = len(barriers)
            signals.request_stop(signal.SIGTERM)
    assert len(barriers) == entered and not (tmp_path / "out").exists()
