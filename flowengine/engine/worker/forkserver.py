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
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable
from multiprocessing import forkserver

__all__ = ["PRELOAD_MODULES", "BASE_MODULES", "SCIPY_OPS", "modules_for", "start_forkserver",
           "ensure_forkserver"]

# gc_pause first (no garbage collection in the forkserver, see there), then the worker code.
BASE_MODULES = ["flowengine.engine.worker.gc_pause", "flowengine.engine.worker.process",
                "flowengine.engine.worker.preload"]
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
    it forks the first worker."""
    multiprocessing.get_context("forkserver").set_forkserver_preload(
        list(dict.fromkeys(modules)))
    forkserver.ensure_running()
