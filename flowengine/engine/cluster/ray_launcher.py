"""The launcher for ``cluster: {engine: ray}``: Ray places the workers, ZeroMQ carries the data.

Theory of operation
-------------------
``prepare(plan)``, before the coordinator binds anything:

1. Connect to the Ray cluster (``cluster.address``: ``auto`` or the head's
   HOST:PORT) unless this process already is.
2. Place each stage with a ``placement:``: one Ray placement group per stage,
   one bundle per replica (``{CPU: 1, **resources}``, the node labels as each
   bundle's label selector; strategy SPREAD with ``spread: true``, else PACK).
   Ray reserves the resources for the run; the group's table says which node
   each bundle got. A request no host can meet does not fail in Ray (it
   waits, for an autoscaler that may never come), so flowengine waits at most
   ``placement_timeout_s`` and then names the stage and what no host has.
   Stages without ``placement:`` run on the coordinator's own node.
3. Start one host agent (``agent.py``) per node used, pinned to it by node
   affinity (``soft=False``), with no CPU of its own and Ray's restarts off
   (``max_restarts=0``: restarting is the coordinator's policy, per worker).
   Each agent reads the CURVE keys from the key directory on its host.
4. Give every endpoint its host: each inbox ``tcp://<node ip>:<port>`` with a
   port the agent found free on its host, the control socket the
   coordinator's node IP. Whole-streams sources claim their streams through
   the coordinator (``claims.py``) instead of files in a local directory.

Then ``start(spec)`` asks the worker's agent to fork it and returns a handle
with the surface of a ``multiprocessing.Process`` (``launcher.py``): its
``sentinel`` is the read end of a local pipe that a thread closes when the
agent reports the worker's exit. One thread per agent keeps a
``wait_exits`` call waiting there; when the agent itself dies, that call
raises, and every worker it hosted is marked ``lost``, naming the host.
``replace`` forks the replacement through the same agent (the same host).
``close`` kills what is left, the agents and the placement groups, and
disconnects from Ray if it connected.

This is the only module that imports ray, and only when a run asks for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_for_sentinels
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError
from ray.util.placement_group import placement_group, placement_group_table, \
    remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from flowengine.engine.cluster.agent import HostAgent
from flowengine.engine.cluster.claims import ClaimService
from flowengine.engine.cluster.placement import bundle_of, describe, format_labels, \
    format_resources
from flowengine.engine.plan import Plan, WorkerSpec
from flowengine.errors import FlowError

__all__ = ["RayLauncher", "RayWorker", "PlacementError", "ClusterError", "host_label"]

log = logging.getLogger("flowengine.engine")

_CALL_TIMEOUT_S = 30.0       # one call to an agent (start a worker, find ports)
_WAIT_EXITS_S = 1.0          # how long one wait_exits call waits on the agent's host
_POLL_S = 0.25               # how often a waiting exit thread looks whether the run closed
_STOP_AGENT_S = 5.0
_PROBE_S = 1.0               # is an agent still there (asked when one of its workers failed)


class ClusterError(FlowError):
    """The cluster cannot run the plan: no cluster there, an agent that cannot start..."""


class PlacementError(ClusterError):
    """No host of the cluster meets a stage's placement within placement_timeout_s."""


def host_label(node: dict) -> str:
    """How reports name a Ray node: its IP and the start of its node id (several nodes of a
    test cluster share one IP): '10.0.0.7/3f2a9c1e'."""
    return f"{node['NodeManagerAddress']}/{node['NodeID'][:8]}"


class RayWorker:
    """A worker forked by a host agent, as the coordinator sees it (launcher.WorkerHandle)."""

    def __init__(self, agent: "_Agent", pid: int) -> None:
        self.agent, self.pid, self.host = agent, pid, agent.host
        self.lost: str | None = None
        self._exitcode: int | None = None
        self.sentinel, self._ended_w = os.pipe()
        self._ended_lock = threading.Lock()

    @property
    def exitcode(self) -> int | None:
        return self._exitcode

    def is_alive(self) -> bool:
        return self._ended_w is not None

    def join(self, timeout: float | None = None) -> None:
        wait_for_sentinels([self.sentinel], timeout)

    def kill(self) -> None:
        self.agent.signal(self.pid, signal.SIGKILL)

    def terminate(self) -> None:
        self.agent.signal(self.pid, signal.SIGTERM)

    def ended(self, exitcode: int | None, lost: str | None = None) -> None:
        """The agent reported its exit (or was lost with it): the sentinel becomes ready."""
        with self._ended_lock:
            if self._ended_w is None:
                return
            self._exitcode, self.lost = exitcode, lost
            os.close(self._ended_w)
            self._ended_w = None

    def close(self) -> None:
        self.ended(self._exitcode, self.lost)
        os.close(self.sentinel)


@dataclass
class _Agent:
    """One host agent and the workers it forked, as the launcher tracks them."""

    node_id: str
    host: str
    actor: Any
    workers: dict[int, RayWorker] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    dead: str | None = None          # why it is gone, once it is
    thread: threading.Thread | None = None

    def signal(self, pid: int, signum: int) -> None:
        if self.dead is None:
            self.actor.signal.remote(pid, signum)     # not waited for: the sentinel says


class RayLauncher:
    """Starts each worker through the host agent of the node Ray placed it on."""

    def __init__(self) -> None:
        self._connected_here = False
        self._agents: dict[str, _Agent] = {}          # node id -> agent
        self._node_of: dict[str, str] = {}            # worker id -> node id
        self._groups: list[Any] = []
        self._claims: ClaimService | None = None
        self._closing = threading.Event()
        self.plan: Plan | None = None

    # ------------------------------------------------------------ the launcher seam

    def prepare(self, plan: Plan) -> None:
        self.plan = plan
        cluster = plan.cluster or {}
        deadline = time.monotonic() + float(cluster.get("placement_timeout_s", 30.0))
        self._connect(cluster.get("address", "auto"))
        nodes = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}
        here = ray.get_runtime_context().get_node_id()
        self._place(plan, nodes, here, deadline)
        self._start_agents(plan, nodes, deadline)
        self._give_endpoints_their_hosts(plan, nodes[here])

    def start(self, spec: WorkerSpec) -> RayWorker:
        return self._fork(self._agents[self._node_of[spec.id]], spec)

    def replace(self, old: RayWorker, spec: WorkerSpec) -> RayWorker:
        """On the host of the worker it replaces (its inbox endpoint is that host's)."""
        return self._fork(old.agent, spec)

    def can_replace(self, old: Any) -> bool:
        """A worker lost with its host cannot come back there: the run fails naming it."""
        return getattr(old, "lost", None) is None and self._agent_alive(old.agent)

    def explain(self, old: Any, what: str) -> str:
        """A worker whose host agent died may say so itself first (it finds its parent gone
        at its next stats, a moment before the agent's death reaches us): name the host."""
        if getattr(old, "lost", None) is None and not self._agent_alive(old.agent):
            return f"was lost with its host {old.agent.host}: the flowengine host agent " \
                   f"there died ({old.agent.dead}); the worker said: {what}"
        return old.lost or what

    def _agent_alive(self, agent: _Agent) -> bool:
        """Asked of the agent itself (bounded), on the failure path only."""
        if agent.dead is None:
            try:
                ray.get(agent.actor.info.remote(), timeout=_PROBE_S)
            except GetTimeoutError:     # (a RayError too) frozen, not dead: heartbeats decide
                pass
            except RayError as exc:
                self._host_lost(agent, _cause(exc))
        return agent.dead is None

    def close(self) -> None:
        """Every agent (with any worker left) and placement group gone; disconnected."""
        self._closing.set()
        for agent in self._agents.values():
            self._stop_agent(agent)
        for agent in self._agents.values():
            if agent.thread is not None:
                agent.thread.join(_WAIT_EXITS_S + 2 * _POLL_S)
            for worker in agent.workers.values():
                worker.close()
        for group in self._groups:
            try:
                remove_placement_group(group)
            except Exception as exc:   # noqa: BLE001 - it goes with the job anyway
                log.warning("placement group not removed (%s): Ray removes it with the job",
                            exc)
        if self._claims is not None:
            self._claims.close()
        if self._connected_here:
            ray.shutdown()

    # ------------------------------------------------------------------- connect

    def _connect(self, address: str) -> None:
        if ray.is_initialized():
            return                      # a program (or a test) connected this process itself
        _check_reachable(address)
        try:
            with _signal_handlers_kept():
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True,
                         configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterError(
                f"cluster.address {address!r}: no Ray cluster to connect to ({exc}). Start "
                f"one with `ray start --head` on the head host and `ray start --address "
                f"HEAD:6379` on the others (docs/cluster.md), or give the head's HOST:PORT"
            ) from None
        self._connected_here = True

    # ------------------------------------------------------------------- placing

    def _place(self, plan: Plan, nodes: dict[str, dict], here: str, deadline: float) -> None:
        """Which node runs each worker: Ray's placement groups for stages that ask, else the
        coordinator's node. Fills `StagePlan.hosts`."""
        pending = []
        for stage in plan.stages:
            if not stage.placement:
                for worker in stage.workers:
                    self._node_of[worker.id] = here
                continue
            bundle = bundle_of(stage.placement)
            labels = stage.placement.get("labels") or {}
            group = placement_group(
                [dict(bundle) for _ in stage.workers],
                strategy="SPREAD" if stage.placement.get("spread") else "PACK",
                name=f"flowengine {plan.name} {stage.name}",
                bundle_label_selector=[dict(labels) for _ in stage.workers] if labels else None)
            self._groups.append(group)
            pending.append((stage, group))
        for stage, group in pending:
            left = max(0.0, deadline - time.monotonic())
            ready, _ = ray.wait([group.ready()], timeout=left)
            if not ready:
                raise PlacementError(self._infeasible(plan, stage, nodes))
            table = placement_group_table(group)["bundles_to_node_id"]
            for index, worker in enumerate(stage.workers):
                self._node_of[worker.id] = table[index]
        for stage in plan.stages:
            stage.hosts = [host_label(nodes[self._node_of[w.id]]) for w in stage.workers]

    def _infeasible(self, plan: Plan, stage: Any, nodes: dict[str, dict]) -> str:
        """Why no host took the stage: a resource or label no host has, or no room."""
        bundle = bundle_of(stage.placement)
        labels = stage.placement.get("labels") or {}
        timeout = (plan.cluster or {}).get("placement_timeout_s", 30.0)
        where = f"stage {stage.name!r}: placement: "
        have = "; ".join(f"{host_label(n)} has {format_resources(_custom(n['Resources']))}"
                         + (f" labels {format_labels(_user_labels(n))}"
                            if _user_labels(n) else "")
                         for n in nodes.values())
        missing = [name for name in bundle if not any(name in n["Resources"]
                                                       for n in nodes.values())]
        if missing:
            return (f"{where}no host of the Ray cluster has the resource {missing[0]!r} "
                    f"(each of its {stage.replicas} replica(s) asks for {format_resources(bundle)}); "
                    f"waited {timeout:g} s (cluster.placement_timeout_s). Give a host that "
                    f"resource (`ray start --resources`) or fix the name. Hosts: {have}")
        plain = {k: v for k, v in labels.items() if not any(c in v for c in "!(),")}
        if plain and not any(all(_user_labels(n).get(k) == v for k, v in plain.items())
                             for n in nodes.values()):
            return (f"{where}no host of the Ray cluster has the labels "
                    f"{format_labels(plain)}; waited {timeout:g} s "
                    f"(cluster.placement_timeout_s). Hosts: {have}")
        return (f"{where}the Ray cluster found no room for {stage.replicas} replica(s) of "
                f"{describe(stage.placement)} within {timeout:g} s (cluster.placement_timeout_s): "
                f"other work holds the resources, or too few hosts for spread: true. "
                f"Hosts: {have}")

    # -------------------------------------------------------------------- agents

    def _start_agents(self, plan: Plan, nodes: dict[str, dict], deadline: float) -> None:
        keys_dir = (plan.cluster or {}).get("keys")
        public = (plan.curve.server_public, plan.curve.client_public) if plan.curve else None
        ops = [w.op for w in plan.workers] + [m.op for w in plan.workers
                                               for m in w.fused + w.chain]
        remote = ray.remote(HostAgent)
        for node_id in dict.fromkeys(self._node_of.values()):
            node = nodes[node_id]
            actor = remote.options(
                name=None, num_cpus=0, max_restarts=0, max_task_retries=0,
                max_concurrency=8,   # a waiting wait_exits must not hold up start or signal
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote(host_label(node), node["NodeManagerAddress"], ops, keys_dir, public,
                     os.getcwd())
            self._agents[node_id] = _Agent(node_id, host_label(node), actor)
        calls = {agent.actor.info.remote(): agent for agent in self._agents.values()}
        ready, _ = ray.wait(list(calls), num_returns=len(calls),
                            timeout=max(0.0, deadline - time.monotonic()) + _CALL_TIMEOUT_S)
        for call, agent in calls.items():
            if call not in ready:
                raise ClusterError(f"the flowengine host agent on {agent.host} did not start "
                                   f"in time (is flowengine installed there, with the same "
                                   f"Python?)")
            try:
                agent.info = ray.get(call)
            except RayError as exc:
                raise ClusterError(f"the flowengine host agent on {agent.host} could not "
                                   f"start: {_cause(exc)}") from None
        for agent in self._agents.values():
            agent.thread = threading.Thread(target=self._follow_exits, args=(agent,),
                                            name=f"flowengine exits {agent.host}", daemon=True)
            agent.thread.start()

    def _stop_agent(self, agent: _Agent) -> None:
        """Kill the workers it still has, then the agent (its forkserver goes with it)."""
        if agent.dead is None:
            try:
                ray.get(agent.actor.shutdown.remote(), timeout=_STOP_AGENT_S)
            except (RayError, GetTimeoutError) as exc:
                log.warning("host agent on %s did not stop its workers (%s): killing it, which "
                            "kills them", agent.host, _cause(exc))
        try:
            ray.kill(agent.actor, no_restart=True)
        except RayError:
            pass

    def _fork(self, agent: _Agent, spec: WorkerSpec) -> RayWorker:
        if agent.dead is not None:
            raise ClusterError(f"stage {spec.stage!r} replica {spec.replica}: its host "
                               f"{agent.host} is gone ({agent.dead})")
        # No keys in Ray's arguments: the agent adds its host's (agent.py).
        server_secret = spec.curve is not None and spec.curve.server_secret is not None
        call = agent.actor.start.remote(dataclasses.replace(spec, curve=None), server_secret)
        try:
            pid = ray.get(call, timeout=_CALL_TIMEOUT_S)
        except GetTimeoutError:
            raise ClusterError(f"stage {spec.stage!r} replica {spec.replica}: the host agent "
                               f"on {agent.host} did not start it within "
                               f"{_CALL_TIMEOUT_S:.0f} s") from None
        except RayError as exc:
            raise ClusterError(f"stage {spec.stage!r} replica {spec.replica}: the host agent "
                               f"on {agent.host} could not start it: {_cause(exc)}") from None
        worker = RayWorker(agent, pid)
        agent.workers[pid] = worker
        return worker

    def _follow_exits(self, agent: _Agent) -> None:
        """One call waiting in the agent at a time; each exit closes its worker's sentinel."""
        call = None
        while not self._closing.is_set():
            if call is None:
                call = agent.actor.wait_exits.remote(_WAIT_EXITS_S)
            ready, _ = ray.wait([call], timeout=_POLL_S)
            if not ready:
                continue        # a frozen host answers nothing: the heartbeats find it
            try:
                exits = ray.get(call)
            except RayError as exc:
                if not self._closing.is_set():
                    self._host_lost(agent, _cause(exc))
                return
            call = None
            for pid, code in exits:
                worker = agent.workers.get(pid)
                if worker is not None:
                    worker.ended(code)

    def _host_lost(self, agent: _Agent, why: str) -> None:
        if agent.dead is not None:
            return              # seen already (by the exits thread or a failure's probe)
        agent.dead = why
        log.error("the flowengine host agent on %s died (%s): its workers are lost", agent.host,
                  why)
        for worker in agent.workers.values():
            worker.ended(None, lost=f"was lost with its host {agent.host}: the flowengine host "
                                    f"agent there died ({why})")

    # ----------------------------------------------------------------- endpoints

    def _give_endpoints_their_hosts(self, plan: Plan, here: dict) -> None:
        """tcp://<node ip>:<port> for every inbox (the port free on the host that binds it),
        the control endpoint on the coordinator's node IP, claims through the coordinator."""
        moved: dict[str, str] = {}
        by_agent: dict[str, list[WorkerSpec]] = {}
        for spec in plan.workers:
            if spec.inbox_endpoint is not None:
                by_agent.setdefault(self._node_of[spec.id], []).append(spec)
        taken: set[str] = set()
        for node_id, specs in by_agent.items():
            agent = self._agents[node_id]
            ip = agent.info["ip"]
            endpoints = []
            while len(endpoints) < len(specs):     # several nodes may share one IP (tests)
                ports = ray.get(agent.actor.free_ports.remote(len(specs) - len(endpoints)),
                                timeout=_CALL_TIMEOUT_S)
                endpoints += [e for e in (f"tcp://{ip}:{p}" for p in ports) if e not in taken]
                taken.update(endpoints)
            for spec, endpoint in zip(specs, endpoints):
                moved[spec.inbox_endpoint] = endpoint
        ip = here["NodeManagerAddress"]
        control = f"tcp://{ip}:{_free_port(ip, taken)}"
        moved[plan.control_endpoint] = control
        plan.control_endpoint = control
        shares = [w.share for w in plan.workers if w.share and w.share.get("claims")]
        if shares:
            self._claims = ClaimService(ip, plan.curve)
        for spec in plan.workers:
            spec.control_endpoint = moved[spec.control_endpoint]
            if spec.inbox_endpoint is not None:
                spec.inbox_endpoint = moved[spec.inbox_endpoint]
            spec.outputs = [dataclasses.replace(edge, endpoints=[moved[e] for e in
                                                                 edge.endpoints])
                            for edge in spec.outputs]
            if spec.share and spec.share.get("claims"):
                spec.share = {**spec.share, "claims": self._claims.endpoint,
                              "claims_key": os.path.basename(spec.share["claims"])}


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """ray.init makes SIGTERM exit the process at once; the coordinator's own handlers (the
    first SIGINT/SIGTERM drains the run) must stay."""
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in kept.items():
                if handler is not None:
                    signal.signal(signum, handler)


def _check_reachable(address: str) -> None:
    """Fail at once when nothing listens at the cluster's address: ray.init would retry for
    minutes. ('auto' is what Ray makes of it: $RAY_ADDRESS, else this host's cluster.)"""
    try:
        from ray._private.services import canonicalize_bootstrap_address
        resolved = canonicalize_bootstrap_address(address)
    except Exception:   # noqa: BLE001 - Ray's own error (or a changed private API): ray.init says
        return
    if resolved is None:
        return
    host, _, port = resolved.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5.0).close()
    except (OSError, ValueError) as exc:
        raise ClusterError(
            f"cluster.address {address!r}: nothing answers at {resolved} ({exc}): is the Ray "
            f"cluster's head running there? (`ray status` on the head says; docs/cluster.md)"
        ) from None


def _free_port(ip: str, taken: set[str]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((ip, 0))
            port = probe.getsockname()[1]
        if f"tcp://{ip}:{port}" not in taken:
            return port


def _custom(resources: dict[str, float]) -> dict[str, float]:
    """A node's resources as a user names them (not Ray's node:<ip> and memory entries)."""
    return {k: v for k, v in resources.items()
            if not k.startswith("node:") and k not in ("memory", "object_store_memory")}


def _user_labels(node: dict) -> dict[str, str]:
    return {k: v for k, v in (node.get("Labels") or {}).items() if not k.startswith("ray.io/")}


def _cause(exc: BaseException) -> str:
    """The one line that says what went wrong, out of Ray's multi-line errors."""
    text = str(exc)
    for marker in ("ConfigError: ", "FlowError: "):
        if marker in text:
            return text.rsplit(marker, 1)[1].strip().splitlines()[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
