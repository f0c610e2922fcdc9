"""A worker process's entry point, as the processes that start workers name it.

The coordinator and a cluster host's agent hand `run_worker` to multiprocessing,
which sends it to the new process by name. They must not import the worker
code for that (flowengine.engine.worker.process imports every operator and
builds their parameter models: ~0.15 s of a run's start in the coordinator,
which never runs a stage); the forkserver has it preloaded, so the import
below is a dictionary lookup in the worker.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_worker"]


def run_worker(spec: Any) -> None:
    """Run one worker (a WorkerSpec) to its end: flowengine.engine.worker.process."""
    from flowengine.engine.worker.process import run_worker as run
    run(spec)
