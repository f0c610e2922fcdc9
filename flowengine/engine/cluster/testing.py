"""A Ray cluster of several nodes on this machine, for tests, benchmarks and trying docs/cluster.md.

``TestCluster`` starts a head and worker nodes with ``ray.cluster_utils.Cluster``
(Ray's own test tool): every node advertises 127.0.0.1 (``node_ip_address``
and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, else Ray advertises the host's
external address and the driver looks for a raylet there), no dashboard, usage
stats off, each node with its own custom resources and labels, so placement
can tell them apart. ``leftovers()`` lists the processes a flowengine run could
have left on any node (host agents, their forkservers and workers).

Ray is imported inside ``TestCluster.start`` only: importing this module costs
nothing. The environment above must be set before anything imports ray (it is
read at import): ``start`` refuses to go on otherwise, rather than hang.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TestCluster", "LOOPBACK_ENV", "process_table", "leftovers"]

# What makes every Ray process of the test cluster, and a driver, stay on loopback.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass
class TestCluster:
    """Head + nodes on 127.0.0.1; `nodes` maps a name to its node id ('head', 'a', 'b')."""

    __test__ = False     # not a pytest test class

    cpus: int = 4
    workers: dict[str, dict[str, float]] = field(
        default_factory=lambda: {"a": {"node_a": 8}, "b": {"node_b": 8}})
    address: str = ""
    nodes: dict[str, str] = field(default_factory=dict)
    _cluster: Any = None

    def start(self) -> "TestCluster":
        os.environ.update(LOOPBACK_ENV)
        from ray._private import ray_constants
        from ray.cluster_utils import Cluster

        if ray_constants.ENABLE_RAY_CLUSTER:
            # Read when ray was imported: the nodes would advertise the external address,
            # and connecting to them would wait for minutes.
            raise RuntimeError(f"ray was imported before {LOOPBACK_ENV} was set: set them in "
                               f"the environment before importing ray")

        common = {"num_cpus": self.cpus, "node_ip_address": "127.0.0.1"}
        # Ray's nodes and ray.init make SIGTERM exit this process: keep its own handlers (a
        # test process's later forked children would inherit Ray's).
        kept = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._cluster = Cluster(initialize_head=True, head_node_args={
                **common, "include_dashboard": False, "labels": {"role": "head"}})
            for name, resources in self.workers.items():
                self._cluster.add_node(**common, resources=resources, labels={"role": name})
            self.address = self._cluster.address
            self.nodes = self._node_ids()     # read back: its labels say which node is which
        finally:
            for signum, handler in kept.items():
                if handler is not None:
                    signal.signal(signum, handler)
        return self

    def _node_ids(self) -> dict[str, str]:
        import ray
        connected = ray.is_initialized()
        if not connected:
            ray.init(address=self.address, logging_level="WARNING")
        try:
            return {n["Labels"]["role"]: n["NodeID"] for n in ray.nodes()
                    if n.get("Alive") and "role" in n.get("Labels", {})}
        finally:
            if not connected:
                ray.shutdown()

    def host(self, name: str) -> str:
        """The label reports give node `name` ('127.0.0.1/<node id prefix>')."""
        return f"127.0.0.1/{self.nodes[name][:8]}"

    def shutdown(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = None


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process on this machine."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            continue                # a zombie runs nothing
        # The command name may hold spaces and parentheses: the ppid follows the last ')'.
        table[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]),
                                  cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return table


def leftovers(wait_s: float = 10.0) -> list[str]:
    """What flowengine left running on the cluster's nodes: host agents (Ray names their
    processes 'ray::HostAgent...') and every process below one; waits up to `wait_s` for
    processes on their way out (Ray kills an actor asynchronously)."""
    deadline = time.monotonic() + wait_s
    while True:
        table = process_table()
        found = [pid for pid, (_, cmd) in table.items() if cmd.startswith("ray::HostAgent")]
        frontier = list(found)
        while frontier:
            parent = frontier.pop()
            children = [pid for pid, (ppid, _) in table.items() if ppid == parent]
            found += children
            frontier += children
        if not found or time.monotonic() >= deadline:
            return [f"{pid}: {table[pid][1][:100]}" for pid in found if pid in table]
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    """`python -m flowengine.engine.cluster.testing [--node NAME=RESOURCES ...]`: a test
    cluster on 127.0.0.1 until Ctrl-C (docs/cluster.md, "Try it on one machine")."""
    import argparse
    import json
    import signal
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m flowengine.engine.cluster.testing",
        description="A Ray test cluster on 127.0.0.1 (a head and worker nodes) until Ctrl-C.")
    parser.add_argument("--node", action="append", default=[], metavar="NAME=RESOURCES",
                        help="a worker node and its Ray resources as JSON, e.g. "
                             "b='{\"encoder\": 2}' (repeatable; default: a and b)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs each node offers (2)")
    args = parser.parse_args(argv)
    workers = {}
    for node in args.node:
        name, _, resources = node.partition("=")
        try:
            workers[name] = json.loads(resources or "{}")
        except json.JSONDecodeError as exc:
            parser.error(f"--node {node}: resources must be JSON ({exc})")
    cluster = TestCluster(cpus=args.cpus, **({"workers": workers} if workers else {}))
    for signum in (signal.SIGINT, signal.SIGTERM):     # even where a shell left them ignored
        signal.signal(signum, signal.default_int_handler)
    try:
        cluster.start()
        print(f"test cluster at {cluster.address}: nodes {', '.join(cluster.nodes)}\n"
              f"in another shell:  export RAY_ADDRESS={cluster.address} "
              f"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0\nCtrl-C stops it", flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.shutdown()
    print("test cluster stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
