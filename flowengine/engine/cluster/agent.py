"""The host agent: one per host a cluster run uses; forks that host's workers and reports exits.

The Ray launcher makes it a Ray actor pinned to its node (``ray_launcher.py``);
this module imports no ray, so the agent is plain Python a test can drive too.

- **Workers are forked as on one machine**: the agent starts its own
  forkserver (``engine/worker/forkserver.py``, plus ``orphans.py`` so its
  workers die with it) and starts each worker with ``run_worker(spec)``,
  exactly as the local launcher does. A worker's memory is what it is
  locally; the agent costs one process per host, and the worker's exit code
  keeps its signal (a Ray actor per worker would lose it).
- **Keys stay on the host**: specs arrive without CURVE keys (Ray's own
  channel is not encrypted by default); the agent reads them from the key
  directory on its host and checks that their public halves are the
  coordinator's, so a host with other keys is named at once instead of its
  handshakes failing silently.
- **Exits are reported**: ``wait_exits`` returns ``(pid, exit code)`` of the
  workers that ended (a negative code is the signal); the launcher keeps one
  call waiting per agent, so an exit reaches the coordinator in milliseconds.
- **Ports are chosen here**: ``free_ports`` binds on this host's address, so
  an inbox endpoint ``tcp://<host ip>:<port>`` is free where it will be bound.
- **Relative paths mean what they mean to the coordinator**: the agent works in
  the coordinator's working directory when this host has it (workers start in
  their parent's), so ``out/x.mp3`` is the same path on every host.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading
from dataclasses import replace
from multiprocessing import forkserver
from multiprocessing.connection import wait as wait_for_sentinels
from typing import Any

from flowengine.engine.plan import WorkerSpec
from flowengine.config.keys import load_keys
from flowengine.engine.worker.forkserver import PRELOAD_MODULES, ensure_forkserver, \
    modules_for, without_main_module
from flowengine.engine.worker.start import run_worker
from flowengine.errors import ConfigError

__all__ = ["HostAgent", "AGENT_PRELOAD"]

AGENT_PRELOAD = "flowengine.engine.cluster.orphans"
_WAIT_SLICE_S = 1.0


class HostAgent:
    """Forks, signals and watches the workers of one run on this host."""

    def __init__(self, host: str, ip: str, ops: list[str], keys_dir: str | None = None,
                 public_keys: tuple[str, str] | None = None, cwd: str | None = None) -> None:
        self.host, self.ip = host, ip
        if cwd is not None and os.path.isdir(cwd):
            os.chdir(cwd)
        self.keys = None
        if keys_dir is not None:
            try:
                self.keys = load_keys(keys_dir)
            except ConfigError as exc:
                raise ConfigError(f"host {host}: {exc} (each host reads the run's CURVE keys "
                                  f"from its own copy of the key directory)") from None
            if public_keys is not None and \
                    (self.keys.server_public, self.keys.client_public) != tuple(public_keys):
                raise ConfigError(f"host {host}: the CURVE keys in {keys_dir} are not the "
                                  f"coordinator's: copy the coordinator's key directory to "
                                  f"this host")
        self._lock = threading.Lock()
        self._processes: dict[int, Any] = {}       # pid -> Process, until its exit is reported
        self._wake_r, self._wake_w = os.pipe()     # a new worker joins the wait at once
        # This process's forkserver: the local launcher's preload, and orphans.py.
        with without_main_module():
            ensure_forkserver(modules_for(ops) + PRELOAD_MODULES + [AGENT_PRELOAD])

    def info(self) -> dict[str, Any]:
        """Where the agent runs: host, pids (its own and its forkserver's), for reports and
        for a test that checks nothing is left."""
        return {"host": self.host, "ip": self.ip, "pid": os.getpid(),
                "forkserver_pid": getattr(forkserver._forkserver, "_forkserver_pid", None)}

    def free_ports(self, count: int) -> list[int]:
        """`count` distinct tcp ports free on this host's address now."""
        probes = []
        try:
            for _ in range(count):
                probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                probes.append(probe)
                probe.bind((self.ip, 0))
            return [probe.getsockname()[1] for probe in probes]
        finally:
            for probe in probes:
                probe.close()

    def start(self, spec: WorkerSpec, server_secret: bool) -> int:
        """Fork one worker; its pid. `spec` has no keys: they are this host's."""
        if self.keys is not None:
            spec = replace(spec, curve=self.keys if server_secret
                           else self.keys.without_server_secret())
        process = multiprocessing.get_context("forkserver").Process(
            target=run_worker, args=(spec,), name=f"flowengine {spec.id}", daemon=True)
        # The agent's main module is Ray's worker script, which imports ray (0.7 s and ~80 MB
        # in every worker): never needed by one.
        with without_main_module():
            process.start()
        with self._lock:
            self._processes[process.pid] = process
        os.write(self._wake_w, b"w")
        return process.pid

    def signal(self, pid: int, signum: int) -> None:
        """Send `signum` to worker `pid` if it is still one of ours."""
        with self._lock:
            process = self._processes.get(pid)
        if process is not None and process.exitcode is None:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def wait_exits(self, timeout: float = _WAIT_SLICE_S) -> list[tuple[int, int]]:
        """Wait up to `timeout` s for workers to end; (pid, exit code) of each that did, each
        reported once (a negative exit code: killed by that signal)."""
        with self._lock:
            sentinels = {p.sentinel: p for p in self._processes.values()}
        ready = wait_for_sentinels(list(sentinels) + [self._wake_r], timeout=timeout)
        if self._wake_r in ready:
            os.read(self._wake_r, 4096)
        exits = []
        for sentinel in ready:
            process = sentinels.get(sentinel)
            if process is not None:
                process.join()
                exits.append((process.pid, process.exitcode))
        with self._lock:
            for pid, _ in exits:
                self._processes.pop(pid, None)
        return exits

    def shutdown(self) -> list[int]:
        """Kill whatever workers are left (the coordinator has stopped the run); their pids."""
        with self._lock:
            left = [p for p in self._processes.values() if p.exitcode is None]
        for process in left:
            process.kill()
        for process in left:
            process.join(2.0)
        return [p.pid for p in left]
