"""SIGINT/SIGTERM during a run, counted: the first drains, the second stops at once.

Both runners (the coordinator of worker processes and the in-process runner)
install a ``SignalCount`` for the length of a run and look at ``count``. Only
the main thread can own signal handlers: elsewhere installing does nothing
and the count stays 0.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["SignalCount"]


class SignalCount:
    """Counts SIGINT/SIGTERM while installed; `second`, when given, is raised from the
    handler at the second signal (for a runner with no loop of its own to look), and
    `on_second` is called there first (to stop what must stop at once, not at the next look)."""

    def __init__(self, second: BaseException | None = None,
                 on_second: Callable[[], None] | None = None) -> None:
        self.count = 0
        self._second = second
        self._on_second = on_second
        self._previous: dict = {}

    def install(self) -> None:
        """Count from now on. Installed over another count (the command's, around a run), it
        takes that one's signals too: a Ctrl-C while the command validated and planned
        counts for the run it then starts (before, the run went on as if none had come)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._on_signal)
                              for sig in (signal.SIGINT, signal.SIGTERM)}
            # Read once this count receives them: no signal falls between the two.
            outer = {getattr(h, "__self__", None) for h in self._previous.values()}
            self.count += sum(o.count for o in outer if isinstance(o, SignalCount))

    def restore(self) -> None:
        """The handlers from before `install` (nothing when it installed none)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __enter__(self) -> "SignalCount":
        self.install()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.restore()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count == 2 and self._on_second is not None:
            self._on_second()
        if self.count >= 2 and self._second is not None:
            raise self._second
