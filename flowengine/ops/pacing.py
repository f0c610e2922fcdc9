"""Waiting for the wall clock: the one way a live (paced) source waits for its next buffer.

Theory of operation
-------------------
A source paced at real time (``ToneSource(realtime=True)``, the ``tones``
operator) hands out a buffer when the buffer's media time is due on the wall
clock. It waits through a ``MediaClock``, which calls ``wait_until``; by
default that is a plain ``time.sleep``, so the in-process runner and any
script behave as before.

A worker process installs its own waiter (``waiting_with``) around its
source: the waiter first sends what the worker has queued, then waits on the
worker's control socket until the deadline. So everything a source produced
for one tick (the buffers of every stream it carries) leaves as one batch,
just before the source goes idle, and one wake-up per tick serves all its
streams, while the worker still answers the coordinator during the wait.

Streams that start together share one ``MediaClock`` (``MultiToneSource``):
their buffers for one tick are then due at the same instant, and only the
first of them waits.

A source fed from outside (the TCP ingest) waits the same way for its input
with ``wait_readable``: until a file descriptor its feeding thread writes to
can be read, or a timeout. In a worker its buffers so far go out first, so a
packet never waits in the worker for the next one to arrive.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
from collections.abc import Callable, Iterator

__all__ = ["MediaClock", "wait_here", "wait_readable", "wait_until", "waiting_with"]

# waits until a time.monotonic() deadline, or until the file descriptor (if any) is readable
Waiter = Callable[[float, "int | None"], None]

# Per thread: runs in two threads of one process each wait (and count their waits) their way.
_local = threading.local()


def wait_here(deadline: float, fd: int | None) -> None:
    """The plain waiter: sleep until `deadline`, or until `fd` is readable."""
    delay = deadline - time.monotonic()
    if delay <= 0:
        return
    if fd is None:
        time.sleep(delay)
    else:
        select.select([fd], [], [], delay)


def _waiter() -> Waiter:
    """This thread's installed waiter, or the plain one."""
    return getattr(_local, "waiter", None) or wait_here


def wait_until(deadline: float) -> None:
    """Wait until `deadline` (``time.monotonic``) through the installed waiter, which may
    return early when the source should go on at once (its worker is draining)."""
    if deadline > time.monotonic():   # nothing to wait for (nor to send early) otherwise
        _waiter()(deadline, None)


def wait_readable(fd: int, timeout: float) -> None:
    """Wait until `fd` can be read, at most `timeout` seconds, through the installed waiter
    (which may also return early, like `wait_until`'s)."""
    _waiter()(time.monotonic() + timeout, fd)


@contextlib.contextmanager
def waiting_with(waiter: Waiter) -> Iterator[None]:
    """Paced sources wait with `waiter` inside the block (a worker: send, then wait awake)."""
    previous = getattr(_local, "waiter", None)
    _local.waiter = waiter
    try:
        yield
    finally:
        _local.waiter = previous


class MediaClock:
    """Media time on the wall clock: media time t is due t seconds after the first wait.

    The schedule is fixed at the first `wait`, so late wake-ups never accumulate drift.
    """

    __slots__ = ("_start",)

    def __init__(self) -> None:
        self._start: float | None = None

    @property
    def start(self) -> float | None:
        """The ``time.monotonic()`` of media time 0 (None before the first wait)."""
        return self._start

    def wait(self, media_seconds: float) -> None:
        """Wait until `media_seconds` is due; the first call defines media time 0 as now."""
        if self._start is None:
            self._start = time.monotonic()
        wait_until(self._start + media_seconds)
