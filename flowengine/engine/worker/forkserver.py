"""The forkserver that starts the workers: what it preloads, and starting it early.

Workers are forked from a forkserver process that imported the worker code
once (PRELOAD_MODULES), so each worker starts from a copy of it in
milliseconds. The forkserver is started once per coordinator process and
keeps its first preload list; a later run with other operators still gets
their modules imported in each worker before it reports ready
(``engine.worker.preload.warm``), all at once, not on the data path.

`start_forkserver` may be called as soon as a program knows it will run
workers (the CLI does, before it validates the run): the forkserver then
imports on the other core while the program goes on. It also builds the
parameter models of the operators it is told of (PRELOAD_OPS_ENV), once for
every worker.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable
from multiprocessing import forkserver

__all__ = ["PRELOAD_MODULES", "BASE_MODULES", "SCIPY_OPS", "PRELOAD_OPS_ENV", "modules_for",
           "start_forkserver", "ensure_forkserver"]

BASE_MODULES = ["flowengine.engine.worker.process", "flowengine.engine.worker.preload"]
# The worker code, then forkserver_signals, imported for its side effect (SIGTERM, see there)
# once everything else is: its hook must be the last to touch SIGTERM in a new child.
PRELOAD_MODULES = BASE_MODULES + ["flowengine.engine.control.forkserver_signals"]
# Operators whose nodes call scipy.signal (flowengine.ops.processors._scipy imports it lazily).
SCIPY_OPS = frozenset({"fir", "iir", "lowpass", "highpass", "compressor", "loudness"})
# The operators whose parameter models the forkserver builds (comma-separated): its preload
# takes module names only, so it learns them from the environment it starts with.
PRELOAD_OPS_ENV = "FLOWENGINE_PRELOAD_OPS"


def modules_for(ops: Iterable[str]) -> list[str]:
    """The modules to preload for a run whose stages (fused members included) run `ops`."""
    return BASE_MODULES + (["scipy.signal"] if SCIPY_OPS.intersection(ops) else [])


def start_forkserver(ops: Iterable[str] = ()) -> None:
    """Start this process's forkserver now, preloading what workers running `ops` need (a
    no-op once it runs)."""
    ops = list(ops)
    ensure_forkserver(modules_for(ops) + PRELOAD_MODULES, ops)


def ensure_forkserver(modules: list[str], ops: Iterable[str]) -> None:
    """Start this process's forkserver, if it does not run yet, importing `modules` and
    building the parameter models of `ops` before it forks the first worker."""
    multiprocessing.get_context("forkserver").set_forkserver_preload(
        list(dict.fromkeys(modules)))
    before = os.environ.get(PRELOAD_OPS_ENV)
    os.environ[PRELOAD_OPS_ENV] = ",".join(dict.fromkeys(ops))
    try:
        forkserver.ensure_running()
    finally:                        # only the forkserver is meant to see it
        if before is None:
            del os.environ[PRELOAD_OPS_ENV]
        else:
            os.environ[PRELOAD_OPS_ENV] = before
