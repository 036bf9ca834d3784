"""Stopping training by signal, for :class:`attnzoo.training.trainer.Trainer`.

The first Ctrl-C (SIGINT) or a SIGTERM asks the training loop to stop at the next step boundary; a second
Ctrl-C raises ``KeyboardInterrupt`` at once. For tests, ``FAULT_ENV`` makes the process send itself a
signal at a known step boundary.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

# the trainer's logger: these messages are the training loop's
log = logging.getLogger("attnzoo.training.trainer")

#: test-only fault injection: "STEP:SIGNAL" makes the process send itself SIGNAL (KILL, TERM, INT) once
#: step STEP is done, at a step boundary (after a checkpoint due there), so a test can kill a run at a known
#: point; "last:KILL" strikes once the last step's training state is saved, before the final evaluation
FAULT_ENV = "ATTNZOO_TEST_SIGNAL_AT_STEP"


def fault_injection() -> tuple[int | None, int] | None:
    """The fault ``FAULT_ENV`` asks for, as (step or None for the last, signal number), or None."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    step, name = spec.split(":")
    return None if step == "last" else int(step), getattr(signal, "SIG" + name.upper().removeprefix("SIG"))


class StopSignals:
    """While training: the first SIGINT or a SIGTERM asks the loop to stop at the next step boundary."""

    def __init__(self):
        self.stop: str | None = None
        self.previous: dict = {}

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.stop is not None:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.stop = signal.Signals(signum).name
        log.warning("%s: stopping at the end of this step, then saving and evaluating%s", self.stop,
                    " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else "")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def inject(self, signum: int) -> None:
        """Test-only (``FAULT_ENV``): send this process ``signum``, then let the handler run."""
        os.kill(os.getpid(), signum)
        for _ in range(1000):  # let the handler run (the signal may wake another thread first)
            if self.stop is not None:
                break
            time.sleep(0.001)
