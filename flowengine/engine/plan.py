"""From a validated run config to a plan: which workers to start, and how they connect.

The plan is plain data (it crosses into the worker processes): per stage its
replicas, per replica the inbox endpoint it binds, the outgoing edges it
connects, and the set of upstream senders whose EOF it must see.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowengine.config.keys import CurveKeys

__all__ = ["OutputEdge", "WorkerSpec", "StagePart", "StagePlan", "Plan", "sender_id", "auto_replicas",
           "generation_id", "split_generation"]


def sender_id(stage: str, replica: int) -> str:
    """The id a worker uses on the wire and on the control channel: 'stage:replica'."""
    return f"{stage}:{replica}"


def generation_id(worker_id: str, generation: int) -> str:
    """The wire sender id of generation `generation` of worker `worker_id`."""
    return worker_id if generation == 0 else f"{worker_id}@{generation}"


def split_generation(wire_id: str) -> tuple[str, int]:
    """'decode:0@2' -> ('decode:0', 2); an id without '@N' is generation 0."""
    base, sep, generation = wire_id.rpartition("@")
    if sep and base and generation.isdigit():
        return base, int(generation)
    return wire_id, 0


def auto_replicas() -> int:
    """`replicas: auto`: one per core the process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class OutputEdge:
    """A connection from one stage to one downstream stage (all of its replicas)."""

    stage: str
    endpoints: list[str]
    hwm: int
    routing: str = "sticky"        # sticky by stream id; "balanced" into an ordered stage


@dataclass
class WorkerSpec:
    """Everything one worker process needs to know, as plain data."""

    stage: str
    replica: int
    op: str
    params: dict[str, Any]
    kind: str                       # source | processor | encoder | decoder | sink
    control_endpoint: str
    inbox_endpoint: str | None      # None for sources
    inbox_hwm: int
    outputs: list[OutputEdge] = field(default_factory=list)
    upstream: list[str] = field(default_factory=list)   # sender ids whose EOF ends our input
    on_error: str = "fail"
    max_errors: int | None = None
    block_samples: int | None = None
    stats_interval: float = 1.0
    ordered: bool = False           # a replica of an ordered stage: one output per input, oq kept
    merge_senders: list[str] = field(default_factory=list)  # replicas of ordered stages upstream
    reorder_window: int = 0         # per stream, for merging what merge_senders send
    multi_input: bool = False       # one node takes every input (a mixer), keyed by stage
    live: bool = False              # every stream live (paced sources only): outbox.batching
    fused: list[Any] = field(default_factory=list)   # FusedMembers when stages are fused
    # A source that runs the stages after it too (whole streams per replica): the source
    # (op and params as above), then the stages after it, as FusedMembers.
    chain: list[Any] = field(default_factory=list)
    # `params` as the coordinator validated them (core/stage.py's node_values): the worker
    # builds its node from these without validating. None: it validates `params` itself.
    values: dict[str, Any] | None = None
    # Its share of the source's streams, then ({"replica", "replicas"} and, for claims made
    # as each stream is needed, "claims": a directory): see engine/worker/shares.py.
    share: dict[str, Any] | None = None
    curve: CurveKeys | None = None  # CURVE keys (server secret only if it binds an inbox)
    restart: str = "never"          # "on-failure": the coordinator replaces a dead replica
    max_restarts: int = 3
    generation: int = 0             # 0 for the first worker of a replica, then 1, 2, ...
    # Lossless restart of stateless stages (replay.py):
    replay: bool = False            # this stage restarts losslessly: outputs carry input indices
    replay_to: list[str] = field(default_factory=list)   # downstream replicas we buffer for
    replay_messages: int = 0        # bounds of each of those buffers
    replay_bytes: int = 0
    indexed_senders: list[str] = field(default_factory=list)  # upstream lossless replicas
    ack_every: int = 0              # acknowledge them at least every this many messages

    @property
    def id(self) -> str:
        return sender_id(self.stage, self.replica)

    @property
    def wire_id(self) -> str:
        """The sender id on the data plane: 'stage:replica', or 'stage:replica@N' for the
        N-th replacement, so receivers tell its messages from its dead predecessor's."""
        return generation_id(self.id, self.generation)


@dataclass
class StagePart:
    """One stage of a whole-streams group (its source, then the chain after it): the group's
    workers run it, and the report and the audit show it as itself."""

    name: str
    op: str
    kind: str
    params: dict[str, Any]


@dataclass
class StagePlan:
    name: str
    op: str
    kind: str
    input_kind: str | None
    output_kind: str | None
    replicas: int
    hwm: int
    inputs: list[str]
    outputs: list[str]
    workers: list[WorkerSpec]
    formats: dict[str, str] = field(default_factory=dict)   # "in"/"out" -> human-readable format
    fused: list[str] = field(default_factory=list)   # member stages when this is a fused group
    ordered: bool = False
    parts: list[StagePart] = field(default_factory=list)   # a whole-streams group's stages
    # cluster engine ray: what its replicas ask Ray for (resources, labels, spread), or None
    # (the coordinator's host); and, once the launcher placed them, each replica's host.
    placement: dict[str, Any] | None = None
    hosts: list[str | None] = field(default_factory=list)


@dataclass
class Plan:
    name: str
    stages: list[StagePlan]
    control_endpoint: str
    run_dir: str
    curve: CurveKeys | None = None  # the coordinator's keys when security.curve is on
    notes: list[str] = field(default_factory=list)   # the planner's choices, said why
    # Where the workers run: None on this machine; else the cluster section as plain data
    # ({"engine": "ray", "address", "placement_timeout_s", "keys"}: engine/cluster/).
    cluster: dict[str, Any] | None = None

    @property
    def workers(self) -> list[WorkerSpec]:
        return [w for stage in self.stages for w in stage.workers]

    def stage(self, name: str) -> StagePlan:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    @property
    def sinks(self) -> list[StagePlan]:
        return [s for s in self.stages if not s.outputs]
