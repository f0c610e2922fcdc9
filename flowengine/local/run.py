"""Run a validated run config in one process: the reference semantics of the engine.

    report = run_in_process(resolve_run("configs/tone.yaml"), progress=print)

Every stage becomes a stage loop (flowengine.core.loop), the same loop a
worker process runs; here the channel between two stages is a plain call.
So any graph the engine runs, runs here: fan-out (a `Tee` of the consumers),
fan-in into a mixer (a `MixLoop`, one inlet per upstream stage) or into an
ordinary stage (its streams keep their own nodes), several sources (pulled in
turn, one buffer each, as long as they have something). A stage without a
consumer that is not a sink drops its output, as the engine does. A
multi-stream source (`files`, `tones`) gets one node per stream in every
stage below it, each flushed (its file finalised) when the source reports
the stream ended; a stream it skipped after an error arrives *aborted* and is
closed unflushed everywhere.

The report has the engine's shape (`RunReport` of `StageReport`s), from the
loops' per-stream counts, and the run ends with the same sample audit
(flowengine.core.audit), which raises AuditError on a mismatch.

Signals, as in the engine: the first SIGINT/SIGTERM drains (every source is
treated as ended before its next pull, so the nodes flush and the files are
finalised, and the report says `interrupted`); a second raises
`RunInterrupted` at once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowengine.config.validate import ResolvedRun, StageInfo
from flowengine.core.audit import AuditStage, audit_report, check_audit
from flowengine.core.loop import MixLoop, NullOutlet, Outlet, SourceLoop, StageLoop, Tee
from flowengine.core.operators import is_multi_input
from flowengine.core.report import RunInterrupted, RunReport, StageReport, WorkerReport
from flowengine.core.signals import SignalCount
from flowengine.core.stage import create_stage_node
from flowengine.errors import FlowError
from flowengine.ops.node import AGAIN, EOF
from flowengine.ops.pacing import wait_here, waiting_with

__all__ = ["run_in_process", "make_output_dirs", "audit_stages"]

_IDLE_SLEEP_S = 0.001
_SOURCE_TIMEOUT_S = 60.0


def _is_mixer(stage: StageInfo) -> bool:
    return stage.kind != "source" and is_multi_input(getattr(stage.spec, "factory", None))


def make_output_dirs(run: ResolvedRun) -> None:
    """Create the missing directories of every sink's output path (validation checked them)."""
    for stage in run.stages:
        path = stage.params.get("path")
        if stage.kind == "sink" and isinstance(path, str):
            Path(path).absolute().parent.mkdir(parents=True, exist_ok=True)


class _IdleWaits:
    """The waiter (flowengine.ops.pacing) of an in-process run: it waits as a plain script
    does and adds up how long, so a paced or outside-fed source's wait for its next buffer
    does not count as busy, as in a worker."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, deadline: float, fd: int | None) -> None:
        start = time.perf_counter()
        wait_here(deadline, fd)
        self.seconds += time.perf_counter() - start


class _Graph:
    """The run's stages as loops, each handed to the stages before it as their outlet."""

    def __init__(self, run: ResolvedRun) -> None:
        self.run = run
        self.loops: dict[str, Any] = {}
        self.sources: list[SourceLoop] = []
        self.clocked: list[MixLoop] = []      # mixers that act on the wall clock
        for stage in reversed(run.stages):    # consumers exist before what feeds them
            self.loops[stage.name] = self._loop(stage)
        self.sources.reverse()                # in the order of the config

    def _node(self, stage: StageInfo) -> Any:
        node = create_stage_node(stage.op, stage.kind, dict(stage.params),
                                 block_samples=self.run.config.block_samples)
        node.name = stage.name
        return node

    def _outlet(self, stage: StageInfo) -> Outlet:
        outlets = []
        for name in stage.consumers:
            consumer = self.loops[name]
            outlets.append(consumer.inlet(stage.name) if isinstance(consumer, MixLoop)
                           else consumer)
        if not outlets:
            return NullOutlet()
        return outlets[0] if len(outlets) == 1 else Tee(outlets)

    def _loop(self, stage: StageInfo) -> Any:
        outlet = self._outlet(stage)
        if stage.kind == "source":
            loop = SourceLoop(stage.name, self._node(stage), outlet)
            self.sources.append(loop)
            return loop
        if _is_mixer(stage):
            loop = MixLoop(stage.name, self._node(stage), outlet, list(stage.inputs))
            if getattr(loop.node, "needs_clock", False):
                self.clocked.append(loop)
            return loop
        config = stage.config
        return StageLoop(stage.name, lambda: self._node(stage), outlet,
                         upstreams=len(stage.inputs), on_error=config.on_error,
                         max_errors=config.max_errors)

    def abort(self) -> None:
        """After a failure: close every node unflushed (files stay NAME.part)."""
        for loop in self.loops.values():
            with contextlib.suppress(Exception):
                if isinstance(loop, StageLoop):
                    loop.abort()
                else:
                    loop.node.close()

    def report(self, wall: float, interrupted: bool) -> RunReport:
        stages = [StageReport(stage.name, stage.op, stage.kind,
                              [_worker_report(stage.name, self.loops[stage.name], wall)])
                  for stage in self.run.stages]
        audio = max((s.workers[0].seconds_in for s in stages if s.kind == "sink"), default=0.0)
        return RunReport(self.run.config.name, stages, wall, audio, interrupted=interrupted)


def _worker_report(name: str, loop: Any, wall: float) -> WorkerReport:
    """A loop's counts in the shape of one engine worker's."""
    report = WorkerReport(name, 0)
    for stream, counts in loop.counts.items():
        report.messages_in += counts.in_messages
        report.samples_in += counts.in_samples
        report.messages_out += counts.out_messages
        report.samples_out += counts.out_samples
        if counts.in_rate:
            report.seconds_in += counts.in_samples / counts.in_rate
        if counts.out_rate:
            report.seconds_out += counts.out_samples / counts.out_rate
        report.stream_counts[stream] = counts.counts()
        report.stream_clocks[stream] = counts.clocks()
    report.busy_seconds = loop.busy
    report.busy_percent = 100.0 * loop.busy / wall if wall > 0 else 0.0
    report.errors_skipped = loop.errors_skipped
    report.streams_open = len(getattr(loop, "nodes", ()))
    return report


def run_in_process(run: ResolvedRun, *, progress: Callable[[RunReport], None] | None = None,
                   progress_interval: float = 1.0, handle_signals: bool = True) -> RunReport:
    """Run `run` in this process; `progress(report)` about every `progress_interval` seconds.
    `handle_signals`: the first SIGINT/SIGTERM drains the run, a second stops it (module doc)."""
    make_output_dirs(run)
    signals = SignalCount(second=RunInterrupted("interrupted twice: run stopped at once"))
    with signals if handle_signals else contextlib.nullcontext():
        try:
            return _run(run, signals, progress, progress_interval)
        except FlowError as exc:
            if not signals.count:
                raise
            # Drained before it ended: e.g. a live source stopped before its first buffer
            # leaves a sink with nothing to finalise. The run was interrupted, not failed.
            interrupted = RunInterrupted("interrupted while draining")
            interrupted.add_note(str(exc))
            raise interrupted from exc


def _run(run: ResolvedRun, signals: SignalCount,
         progress: Callable[[RunReport], None] | None, progress_interval: float) -> RunReport:
    graph = _Graph(run)
    idle = _IdleWaits()
    started = time.monotonic()
    try:
        with waiting_with(idle):
            _drive(graph, signals, idle, progress, progress_interval, started)
    except BaseException:
        graph.abort()
        raise
    for source in graph.sources:
        source.node.close()
    report = graph.report(time.monotonic() - started, signals.count > 0)
    for stage in report.stages:
        stage.workers[0].done = True
    report.complete = True
    report.audit = audit_report(audit_stages(run), report)
    check_audit(report)       # AuditError (a FlowError) with the report attached
    return report


def _drive(graph: _Graph, signals: SignalCount, idle: _IdleWaits,
           progress: Callable[[RunReport], None] | None, progress_interval: float,
           started: float) -> None:
    """Pull the sources in turn, one buffer each, until every one has ended (or the run
    drains); a source with nothing now is asked again after the others, and the run waits a
    little only when none had anything (bounded: `_SOURCE_TIMEOUT_S` without a buffer)."""
    live = list(graph.sources)
    turn = idle_turns = 0
    last_buffer = last_progress = time.monotonic()
    while live:
        source = live[turn % len(live)]
        turn += 1
        if signals.count:
            out = EOF
        else:
            waited = idle.seconds
            out = source.step()
            source.busy -= idle.seconds - waited    # a paced source's wait is not work
        for mixer in graph.clocked:
            mixer.drain()
        if out is EOF:
            source.close()
            live.remove(source)
            continue
        now = time.monotonic()
        if out is AGAIN:
            idle_turns += 1
            if idle_turns >= len(live):
                if now - last_buffer > _SOURCE_TIMEOUT_S:
                    names = ", ".join(repr(s.name) for s in live)
                    raise FlowError(f"source(s) {names} produced nothing for "
                                    f"{_SOURCE_TIMEOUT_S:.0f} s (they keep answering AGAIN)")
                time.sleep(_IDLE_SLEEP_S)
                idle_turns = 0
            continue
        idle_turns = 0
        last_buffer = now
        if progress is not None and now - last_progress >= progress_interval:
            last_progress = now
            progress(graph.report(now - started, signals.count > 0))


def audit_stages(run: ResolvedRun) -> list[AuditStage]:
    """The stages of `run` as the sample audit sees them (no fusion in one process)."""
    return [AuditStage(stage.name, stage.op, stage.kind, stage.values or dict(stage.params),
                       tuple(stage.inputs), multi_input=_is_mixer(stage)) for stage in run.stages]
