"""How the coordinator starts, replaces and stops its workers: the launcher seam.

The coordinator knows a worker by a handle with the surface of a
``multiprocessing.Process`` that has been started: ``pid``, ``sentinel`` (a
file descriptor that becomes readable when the worker has ended, for
``multiprocessing.connection.wait``), ``exitcode`` (negative: the signal),
``is_alive()``, ``join(timeout)``, ``terminate()``, ``kill()``; plus ``host``
(where it runs, None for this machine) and ``lost`` (None, or why the launcher
lost track of it: its host went away, so no exit code will come).

A launcher is used in this order by one run::

    prepare(plan)       before the control socket binds: may place the workers and
                        give the plan's endpoints the addresses of the hosts that bind them
    start(spec)         one of the run's workers, started: its handle
    replace(old, spec)  a replacement for a dead worker (restart: on-failure), on its host
    explain(old, what)  what to say of a failed worker (a cluster launcher names a lost host)
    close()             after every worker has ended (or was killed): release the rest

``LocalLauncher`` forks every worker on this machine from the forkserver
(``engine/worker/forkserver.py``). The Ray launcher (``engine/cluster/``)
is chosen by ``cluster: {engine: ray}`` and is the only code that imports ray.
"""

from __future__ import annotations

import multiprocessing
from typing import Any, Protocol

from flowengine.engine.control import prestart
from flowengine.engine.plan import Plan, WorkerSpec
from flowengine.engine.worker.forkserver import start_forkserver
from flowengine.engine.worker.entry import run_worker

__all__ = ["WorkerHandle", "Launcher", "LocalLauncher", "launcher_for"]


class WorkerHandle(Protocol):
    pid: int | None
    sentinel: int
    host: str | None
    lost: str | None

    @property
    def exitcode(self) -> int | None: ...
    def is_alive(self) -> bool: ...
    def join(self, timeout: float | None = None) -> None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


class Launcher(Protocol):
    def prepare(self, plan: Plan) -> None: ...
    def start(self, spec: WorkerSpec) -> WorkerHandle: ...
    def replace(self, old: WorkerHandle, spec: WorkerSpec) -> WorkerHandle: ...
    def can_replace(self, old: WorkerHandle) -> bool: ...
    def explain(self, old: WorkerHandle, what: str) -> str: ...
    def close(self) -> None: ...


class LocalLauncher:
    """Every worker a process of this machine, forked by the forkserver with flowengine's
    worker code preloaded (its handles are the multiprocessing.Process objects)."""

    def prepare(self, plan: Plan) -> None:
        # Only the first run of this process starts the forkserver; workers warm() the rest.
        start_forkserver([w.op for w in plan.workers] +
                         [m.op for w in plan.workers for m in w.fused + w.chain])
        prestart.keep(len(plan.workers))

    def start(self, spec: WorkerSpec) -> Any:
        """A worker prestarted for this run (control/prestart.py) given `spec`, or a new one."""
        waiting = prestart.take()
        if waiting is not None:
            process, sender = waiting
            try:
                sender.send(spec)
            except OSError:         # it is gone: the run forks one, and sees why if it fails
                pass
            else:
                process.name = f"flowengine {spec.id}"
                process.host = process.lost = None
                return process
            finally:
                sender.close()
        return self._fork(spec)

    def replace(self, old: Any, spec: WorkerSpec) -> Any:
        return self._fork(spec)

    @staticmethod
    def _fork(spec: WorkerSpec) -> Any:
        process = multiprocessing.get_context("forkserver").Process(
            target=run_worker, args=(spec,), name=f"flowengine {spec.id}", daemon=True)
        process.host = process.lost = None
        process.start()
        return process

    def can_replace(self, old: Any) -> bool:
        return True

    def explain(self, old: Any, what: str) -> str:
        return what

    def close(self) -> None:
        pass


def launcher_for(plan: Plan) -> Launcher:
    """The launcher the plan asks for: this machine, or the cluster engine it names."""
    engine = (plan.cluster or {}).get("engine", "local")
    if engine == "local":
        return LocalLauncher()
    if engine == "ray":
        # Imported here only: ray costs ~0.7 s and ~80 MB, and no worker may load it.
        from flowengine.engine.cluster.ray_launcher import RayLauncher
        return RayLauncher()
    raise ValueError(f"unknown cluster engine {engine!r}")
