"""The signals that stop a run, for the command line (which turns them into exceptions) and for the
worker processes of the data builders (which leave them to the main process)."""

from __future__ import annotations

import signal

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
