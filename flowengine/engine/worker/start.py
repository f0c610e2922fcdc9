"""A worker process's entry point, as the processes that start workers name it.

The coordinator and a cluster host's agent hand `run_worker` to multiprocessing,
which sends it to the new process by name. They must not import the worker
code for that (flowengine.engine.worker.process imports every operator and
builds their parameter models: ~0.15 s of a run's start in the coordinator,
which never runs a stage); the forkserver has it preloaded, so the import
below is a dictionary lookup in the worker. `run_worker_when_told` is the
entry of a worker started before its run was planned (control/prestart.py).
"""

from __future__ import annotations

import signal
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["WORKER_NAME_PREFIX", "run_worker", "run_worker_when_told"]

# The start of every worker process's name (control/forkserver_signals.py tells workers by it).
WORKER_NAME_PREFIX = "flowengine "


def run_worker(spec: Any) -> None:
    """Run one worker (a WorkerSpec) to its end: flowengine.engine.worker.process."""
    from flowengine.engine.worker.process import run_worker as run
    run(spec)


def run_worker_when_told(specs: Connection) -> None:
    """Wait for this worker's WorkerSpec on `specs`, then run it as `run_worker` does; end
    quietly when none comes: the process that started it closed its end (it needed no such
    worker, or it ended), which is also the bound on the wait."""
    # As a worker: Ctrl-C and SIGTERM to the process group are the coordinator's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        spec = specs.recv()
    except (EOFError, OSError):
        return
    finally:
        specs.close()
    run_worker(spec)
