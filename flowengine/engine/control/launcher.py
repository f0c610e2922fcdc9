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
(``engine/worker/forkserver.py``), without this program's main module unless
one of the worker's operators is defined there (``uses_main_module``). The Ray launcher (``engine/cluster/``)
is chosen by ``cluster: {engine: ray}`` and is the only code that imports ray.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
from typing import Any, Protocol

from flowengine.engine.control import prestart
from flowengine.engine.plan import Plan, WorkerSpec
from flowengine.engine.worker.forkserver import start_forkserver, without_main_module
from flowengine.engine.worker.start import WORKER_NAME_PREFIX, run_worker
from flowengine.ops.registry import registry

__all__ = ["WorkerHandle", "Launcher", "LocalLauncher", "launcher_for", "uses_main_module"]


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
        """A worker prestarted for this run (control/prestart.py) given `spec`, or a new one
        (always for a spec that needs the main module, which no prestarted worker has)."""
        needs_main = uses_main_module(spec)
        waiting = None if needs_main else prestart.take()
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
        return self._fork(spec, needs_main)

    def replace(self, old: Any, spec: WorkerSpec) -> Any:
        return self._fork(spec, uses_main_module(spec))

    @staticmethod
    def _fork(spec: WorkerSpec, needs_main: bool) -> Any:
        process = multiprocessing.get_context("forkserver").Process(
            target=run_worker, args=(spec,), name=f"{WORKER_NAME_PREFIX}{spec.id}", daemon=True)
        process.host = process.lost = None
        with contextlib.nullcontext() if needs_main else without_main_module():
            process.start()
        return process

    def can_replace(self, old: Any) -> bool:
        return True

    def explain(self, old: Any, what: str) -> str:
        return what

    def close(self) -> None:
        pass


def uses_main_module(spec: WorkerSpec) -> bool:
    """Whether a worker of `spec` needs this program's main module, which multiprocessing
    would otherwise have it run first: an operator defined there (registered by the main
    script, or named ``__main__:attribute``) or a parameter of one of its classes."""
    if _refers_to_main(spec):
        return True
    ops = [spec.op] + [member.op for member in spec.fused + spec.chain]
    return any(getattr(registry.get(op).factory, "__module__", None) == "__main__"
               for op in ops if ":" not in op and op in registry)


def _refers_to_main(value: Any) -> bool:
    """Whether `value` (a spec, its parameters) names the main module or holds an object of
    it: what pickling it for the worker would refer to ``__main__`` by."""
    if isinstance(value, str):
        return value.startswith("__main__:")
    if isinstance(value, dict):
        return any(_refers_to_main(k) or _refers_to_main(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_refers_to_main(v) for v in value)
    if getattr(value, "__module__", None) == "__main__" or type(value).__module__ == "__main__":
        return True
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(_refers_to_main(getattr(value, f.name)) for f in dataclasses.fields(value))
    return False


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
