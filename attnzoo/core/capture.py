"""The recording half of :func:`attnzoo.capture`: a context variable that :func:`attnzoo.attend` asks.

``attend`` calls ``active()`` once per call; when a recorder is set (by
:func:`attnzoo.mechanisms.capture.capture`, which also names the records by the
module running), it hands it the weights: ``recorder.record(weights)``. The
core knows nothing of modules or mechanisms; the hooks live above them.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from torch import Tensor


class Recorder(Protocol):
    """What attend() hands its weights to while a capture is active."""

    def record(self, weights: Tensor) -> None: ...


_ACTIVE: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("attnzoo_capture", default=None)


def active() -> Recorder | None:
    """The recorder of the current call, if any."""
    return _ACTIVE.get()


@contextmanager
def recording(recorder: Recorder) -> Iterator[Recorder]:
    """``recorder`` receives the weights of every attend() call inside the block (this context only)."""
    token = _ACTIVE.set(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.reset(token)
