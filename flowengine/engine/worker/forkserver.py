"""The forkserver that starts the workers: what it preloads, and starting it early.

Workers are forked from a forkserver process that imported the worker code
once (PRELOAD_MODULES), so each worker starts from a copy of it in
milliseconds. The forkserver is started once per coordinator process and
keeps its first preload list; a later run with other operators still gets
their modules imported in each worker before it reports ready
(``engine.worker.preload.warm``), all at once, not on the data path.

`start_forkserver` may be called as soon as a program knows it will run
workers (the CLI does, before it validates the run): the forkserver then
imports on the other core while the program goes on.

multiprocessing makes each process it starts run the starting program's main
module first (as ``__mp_main__``): a script's own imports, in every worker, on
every run (bench_pipeline.py's made a 3-worker run of 0.1 s of audio take
0.23 s instead of 0.04 s). A launcher starts a worker ``without_main_module``
unless the worker needs something defined there.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import threading
import types
from collections.abc import Iterable
from multiprocessing import forkserver, resource_tracker

__all__ = ["PRELOAD_MODULES", "BASE_MODULES", "SCIPY_OPS", "modules_for", "start_forkserver",
           "ensure_forkserver", "without_main_module"]

# blas before numpy loads (one BLAS thread in every worker), gc_pause (no garbage collection
# in the forkserver), then the worker code; see each.
BASE_MODULES = ["flowengine.blas", "flowengine.engine.worker.gc_pause",
                "flowengine.engine.worker.process", "flowengine.engine.worker.preload"]
# The worker code, then forkserver_signals, imported for its side effect (SIGTERM, see there)
# once everything else is: its hook must be the last to touch SIGTERM in a new child.
PRELOAD_MODULES = BASE_MODULES + ["flowengine.engine.control.forkserver_signals"]
# Operators whose nodes call scipy.signal (flowengine.ops.processors._scipy imports it lazily).
SCIPY_OPS = frozenset({"fir", "iir", "lowpass", "highpass", "compressor", "loudness"})


def modules_for(ops: Iterable[str]) -> list[str]:
    """The modules to preload for a run whose stages (fused members included) run `ops`."""
    return BASE_MODULES + (["scipy.signal"] if SCIPY_OPS.intersection(ops) else [])


def start_forkserver(ops: Iterable[str] = ()) -> None:
    """Start this process's forkserver now, preloading what workers running `ops` need (a
    no-op once it runs)."""
    ensure_forkserver(modules_for(ops) + PRELOAD_MODULES)


def ensure_forkserver(modules: list[str]) -> None:
    """Start this process's forkserver, if it does not run yet, importing `modules` before
    it forks the first worker.

    The forkserver ignores Ctrl-C only once it has imported them: before, a Ctrl-C to the
    process group printed its KeyboardInterrupt traceback under the command's own line. So
    it starts with SIGINT blocked (a signal mask survives exec), as multiprocessing starts
    its resource tracker, which goes first because its own start unblocks the signal;
    forkserver_signals unblocks it in each process the forkserver forks."""
    multiprocessing.get_context("forkserver").set_forkserver_preload(
        list(dict.fromkeys(modules)))
    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class without_main_module:
    """While a process starts, hide this program's main module from multiprocessing, so the
    new process does not import it (a worker's target is ``run_worker``, imported by name).
    One start at a time: the swap is of ``sys.modules["__main__"]``, the process's own."""

    _lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()
        self.main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")

    def __exit__(self, *exc: object) -> None:
        if self.main is not None:
            sys.modules["__main__"] = self.main
        self._lock.release()
