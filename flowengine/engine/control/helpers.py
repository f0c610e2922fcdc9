"""The helper processes multiprocessing starts for a run's workers, watched like the workers.

The **forkserver** forks every worker (and every replacement), and each worker's exit status
reaches the coordinator through it; the **resource tracker** serves the forkserver and its
children. Both are children of the coordinator, started by the first worker start of the
process and shared by later runs. Before, one that died while the run started ended in
``internal error (EOFError ...): unexpected EOF`` (the start read EOF from the dead
forkserver), a forkserver that died mid-run made every worker look as if it had exited
with code 255, and a dead resource tracker was relaunched with a two-line warning.

`HelperWatch` starts both (``ensure_running``, with flowengine's preload set by the caller)
before the first worker, so their pids are known, opens a pidfd on each (pollable like a
worker's sentinel, and immune to pid reuse), and `failure()` says, for the first one that
ended, which process it was and what killed it: ``os.waitid(..., WNOWAIT)`` reads the exit
status of our child without reaping it, so multiprocessing still finds it to clean up.
"""

from __future__ import annotations

import os
import select
import signal
import warnings
from contextlib import contextmanager
from multiprocessing import forkserver, resource_tracker
from typing import Iterator

__all__ = ["HelperWatch", "pidfd_of", "quiet_tracker_relaunch", "remember_helpers",
           "a_helper_ended"]

# Helper pids whose death a run has reported (this process's helpers are shared by its runs).
_reported: set[int] = set()
_RELAUNCH_WARNING = "resource_tracker: process died"
# The helpers as they were when noted before any run watched them (remember_helpers).
_remembered: dict[str, int] = {}

_ROLES = {"forkserver": "the forkserver (pid {pid}), which starts the workers,",
          "resource tracker": "the resource tracker (pid {pid}) of the worker processes"}


def pidfd_of(pid: int | None) -> int | None:
    """A pidfd for `pid` (Linux ≥ 5.3), or None when there is none to have."""
    if pid is None or not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


@contextmanager
def quiet_tracker_relaunch() -> Iterator[None]:
    """multiprocessing relaunches a dead resource tracker with a UserWarning on stderr; the
    coordinator reports that death itself, in one line."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_RELAUNCH_WARNING)
        yield


def remember_helpers() -> None:
    """Note the helpers running now, for the runs that will watch them: a worker start before
    the run (engine/control/prestart.py) would relaunch one that died meanwhile, unseen; and
    keep quiet about such a relaunch from now on (in a thread, warnings.catch_warnings, which
    changes the whole process's filters, cannot)."""
    warnings.filterwarnings("ignore", message=_RELAUNCH_WARNING)
    for name, pid in _current_pids().items():
        if pid is not None:
            _remembered.setdefault(name, pid)


def a_helper_ended() -> bool:
    """Whether the forkserver or the resource tracker has ended (its status still unread:
    the next worker start would read it, relaunching it, and a run could no longer say how
    it ended)."""
    return any(_how_it_ended(pid) is not None for pid in _current_pids().values()
               if pid is not None)


def _current_pids() -> dict[str, int | None]:
    return {"forkserver": getattr(forkserver._forkserver, "_forkserver_pid", None),
            "resource tracker": getattr(resource_tracker._resource_tracker, "_pid", None)}


def _how_it_ended(pid: int) -> str | None:
    """'was killed by SIGKILL' / 'exited with exit code N' for our ended child `pid`, 'ended'
    when its status is gone (reaped already), None while it runs."""
    try:
        status = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return "ended"
    if status is None:
        return None
    if status.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
        try:
            return f"was killed by {signal.Signals(status.si_status).name}"
        except ValueError:
            return f"was killed by signal {status.si_status}"
    return f"exited with exit code {status.si_status}"


class HelperWatch:
    """The forkserver and the resource tracker of this process, as the coordinator sees them."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.fds: dict[int, str] = {}      # pidfd -> helper name

    def start(self) -> None:
        """Make sure both run (multiprocessing starts them once per process), and watch them."""
        with quiet_tracker_relaunch():
            forkserver.ensure_running()     # starts the resource tracker first
        self.refresh()

    def refresh(self) -> None:
        """Watch the helpers multiprocessing has now, and those remembered before; one
        replaced since (multiprocessing relaunches a dead one at the next start) stays
        watched, so its death is still seen."""
        for name, pid in [*_remembered.items(), *_current_pids().items()]:
            if pid is None or pid in self.pids.values():
                continue
            if name in self.pids:
                self.pids[f"{name}@{pid}"] = pid    # the old one, dead, is still reported
            else:
                self.pids[name] = pid
            fd = pidfd_of(pid)
            if fd is not None:
                self.fds[fd] = name

    def failure(self, wait: float = 0.0) -> str | None:
        """'the forkserver (pid N), which starts the workers, was killed by SIGKILL' for the
        first helper that ended, else None; waits up to `wait` s for one to end (a worker's
        lost sentinel may be seen a moment before the forkserver's own end). A death is
        reported once per process: the next run gets a relaunched helper."""
        if wait > 0 and self.fds:
            select.select(list(self.fds), [], [], wait)
        for name, pid in self.pids.items():
            how = _how_it_ended(pid) if pid not in _reported else None
            if how is not None:
                _reported.add(pid)
                role = _ROLES[name.partition("@")[0]].format(pid=pid)
                return f"{role} {how}"
        return None

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
