"""Workers started before their run is planned, each waiting for its WorkerSpec.

`flowengine run` knows it will run workers long before it has a plan: it starts the
forkserver first, and the forkserver has imported the worker code by the time the
command has imported its own; validating and planning take ~50 ms more. `prestart(count)`
asks the forkserver for `count` workers from a thread then, so their forks and their
start-up take place on the other core meanwhile, off the path every run waits for (a
helper that died before is left for the run to report: helpers.py); the LocalLauncher hands
each of the run's WorkerSpecs to one of them through a pipe instead of forking a worker
then (~5 ms each, five for configs/tone.yaml, one after the other). A prestarted worker
the run does not need exits when its pipe closes: `keep` once the plan says how many
workers the run has, `release` at the end (or this process's exit, whichever comes first).

Only the command line prestarts (it knows the run is its only one); a program using the
engine as a library forks each worker when its run starts, as before.
"""

from __future__ import annotations

import atexit
import multiprocessing
import threading
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from flowengine.engine.control.helpers import a_helper_ended, remember_helpers
from flowengine.engine.worker.start import WORKER_NAME_PREFIX, run_worker_when_told
from flowengine.engine.worker.forkserver import without_main_module

__all__ = ["prestart", "waiting", "take", "keep", "release"]

_lock = threading.Lock()
_waiting: deque[tuple[Any, Connection]] = deque()   # (process, the end we send its spec to)
_starter: threading.Thread | None = None
# Bounds the wait for the forks: the forkserver's preload (~0.3 s here), many times over.
_START_TIMEOUT_S = 30.0


def prestart(count: int) -> None:
    """Start `count` workers from a thread (the forkserver forks them once it is ready); a
    no-op while earlier ones are not released."""
    global _starter
    if count < 1 or _starter is not None:
        return
    remember_helpers()      # a helper that dies before the run is the run's failure all the same
    _starter = threading.Thread(target=_start, args=(count,), name="flowengine prestart",
                                daemon=True)
    _starter.start()
    # Before multiprocessing's own exit handler, which joins every child still running.
    atexit.unregister(release)
    atexit.register(release)


def _start(count: int) -> None:
    context = multiprocessing.get_context("forkserver")
    for _ in range(count):
        if a_helper_ended():        # the run reports it; a start would relaunch it unseen
            return
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=run_worker_when_told, args=(receiver,),
                                  name=f"{WORKER_NAME_PREFIX}worker (waiting)", daemon=True)
        try:
            # The command's script holds nothing a worker needs. The swap is process-wide; the
            # command's main thread, validating meanwhile, never looks at __main__.
            with without_main_module():
                process.start()
        except Exception:           # noqa: BLE001 - the run's own start says what is wrong
            sender.close()
            return
        finally:
            receiver.close()        # the worker has its copy
        with _lock:
            _waiting.append((process, sender))


def waiting() -> list[Any]:
    """The prestarted worker processes still waiting for a spec (once they are started)."""
    _wait_for_starts()
    with _lock:
        return [process for process, _ in _waiting]


def take() -> tuple[Any, Connection] | None:
    """A prestarted worker and the end to send its WorkerSpec to; None when there is none
    (none was prestarted, or each is taken)."""
    _wait_for_starts()
    with _lock:
        while _waiting:
            process, sender = _waiting.popleft()
            if process.is_alive():
                return process, sender
            sender.close()          # it died waiting: not this run's worker
        return None


def keep(count: int) -> None:
    """Let every prestarted worker beyond the first `count` still waiting go."""
    _wait_for_starts()
    with _lock:
        extra = [_waiting.pop() for _ in range(max(0, len(_waiting) - count))]
    for _, sender in extra:
        sender.close()              # it reads the end of its pipe and exits


def release() -> None:
    """Let every prestarted worker still waiting go (the run has ended, or never ran); a
    later `prestart` starts new ones."""
    global _starter
    keep(0)
    _starter = None


def _wait_for_starts() -> None:
    """The starting thread has done: its forks wait for the forkserver's preload."""
    if _starter is not None:
        _starter.join(_START_TIMEOUT_S)
