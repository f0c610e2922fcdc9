"""What a run reports: per stage and replica its counts, the audit's findings, restarts.

Both runners fill the same shapes: the multiprocess engine from its workers'
stats and done messages, the in-process runner from its stage loops; the CLI
draws its table from them and the audit reads their per-stream counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowengine.core.audit import Finding

__all__ = ["RunInterrupted", "WorkerReport", "StageReport", "RunReport", "RestartEvent",
           "StreamGap"]


@dataclass
class RestartEvent:
    """One replacement of a stage replica."""

    stage: str
    replica: int
    generation: int          # 1 for the first replacement of this replica
    reason: str              # what happened to the worker it replaced
    old_pid: int | None
    new_pid: int | None
    seconds: float           # from the failure seen to the replacement ready
    replayed: int = 0        # messages its upstreams re-sent to it (lossless restart)


@dataclass
class StreamGap:
    """Samples of one stream lost to the restart(s) of `stage`, as `consumer` received it."""

    stage: str
    stream: str
    consumer: str
    expected: tuple[int, int]   # the stage's rule applied to what its inputs sent
    got: int                    # what the consumer received from the stage

    @property
    def samples(self) -> int:
        """Samples missing (0 when what arrived is within the rule)."""
        return max(0, self.expected[0] - self.got)


class RunInterrupted(KeyboardInterrupt):
    """A second Ctrl-C / SIGTERM stopped the run at once."""

    exit_code = 130


@dataclass
class WorkerReport:
    """Counts of one stage replica: final ones from its ``done``, or the latest ``stats``."""

    stage: str
    replica: int
    pid: int | None = None
    host: str | None = None       # the cluster host it ran on (None: the coordinator's machine)
    messages_in: int = 0
    samples_in: int = 0
    bytes_in: int = 0
    seconds_in: float = 0.0
    messages_out: int = 0
    samples_out: int = 0
    bytes_out: int = 0
    seconds_out: float = 0.0
    busy_seconds: float = 0.0
    blocked_seconds: float = 0.0
    busy_percent: float = 0.0
    cpu_seconds: float = 0.0      # CPU time of the worker process (all threads), start-up included
    errors_skipped: int = 0
    streams_open: int = 0
    queue_depth: int = 0          # upstream sent - received, at the latest stats
    max_queue: int = 0
    done: bool = False
    restarts: int = 0             # replacements of this replica (restart: on-failure)
    # The counts its replaced generations had reported (added to this one's): the table
    # counts the replica's whole run, not only its replacement's.
    earlier: dict[str, float] = field(default_factory=dict)
    stream_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    # Per stream: sample rates (and packet time bases) in and out, for the audit.
    stream_clocks: dict[str, dict[str, int]] = field(default_factory=dict)
    # At its done: what its lossless-restart bookkeeping held (``Worker.lossless_sizes``).
    lossless: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageReport:
    name: str
    op: str
    kind: str
    workers: list[WorkerReport]

    def total(self, key: str) -> float:
        """Sum of one WorkerReport field over the replicas."""
        return sum(getattr(w, key) for w in self.workers)

    @property
    def max_queue(self) -> int:
        return max((w.max_queue for w in self.workers), default=0)


@dataclass
class RunReport:
    name: str
    stages: list[StageReport]
    wall_seconds: float
    audio_seconds: float      # seconds of audio the sinks received (the largest sink stage)
    interrupted: bool = False
    complete: bool = False
    # The end-of-run sample audit (flowengine.core.audit): one Finding per check.
    audit: list[Finding] = field(default_factory=list)
    # restart: on-failure (flowengine.engine.recovery.restart): each replacement, and per stream the
    # samples lost to them.
    restarts: list[RestartEvent] = field(default_factory=list)
    gaps: list[StreamGap] = field(default_factory=list)

    @property
    def audit_ok(self) -> bool:
        """No audit check found samples lost or invented."""
        return all(finding.ok for finding in self.audit)

    def stage(self, name: str) -> StageReport:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0
