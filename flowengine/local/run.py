"""Run a validated run config in one process with the Runner (the reference semantics).

    report = run_in_process(resolve_run("configs/tone.yaml"), progress=print)

Supported graphs: one source, then a tree. A linear chain runs as
`Runner(source, nodes, sink)`; where a stage feeds several consumers
(fan-out), the first consumer continues the main chain and every other
branch is a `TapNode` whose sink is a `Pipeline` of that branch (taps nest,
so branches may fork again). A stage with no consumer that is not a sink
ends in a `null_sink`.

Fan-in runs in one process when it goes into a multi-input stage (`mix`):
several sources, each followed by a linear chain of stages, into that one
stage; `inprocess_fanin.FanInSource` drives the sources in turn and is the
source of the runner below the mixer. Other fan-in (several inputs into an
ordinary stage, several mixers, or a fan-out before the mixer) runs only in
the multiprocess engine, and `run_in_process` says so with a ConfigError.

A multi-stream source (`files`, `tones`) needs one node per stream in every
later stage, as the engine gives it: the chain below the source then runs
inside a `StreamDemux`, one instance per stream id, each flushed (its file
finalised) as soon as the source reports that stream ended.

Every stage's node is wrapped in a meter that counts messages, samples and
seconds of audio in and out, and busy time, so the report has the same shape
as the multiprocess engine's (`RunReport` of `StageReport`s), with the same
per-stream counts; the run ends with the same sample audit (core/audit.py),
which raises AuditError on a mismatch.

Signals, as in the engine: the first SIGINT/SIGTERM drains (every source
answers EOF at its next pull, so the nodes flush and the files are finalised,
and the report says `interrupted`); a second raises `RunInterrupted` at once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowengine.audio.buffers import AudioFrame, Packet
from flowengine.config.validate import ResolvedRun, StageInfo
from flowengine.core.audit import AuditStage, audit_report, check_audit, clock_samples, count_buffer, \
    new_stream_counts
from flowengine.engine.control.coordinator import RunInterrupted, RunReport, StageReport, WorkerReport
from flowengine.core.operators import is_multi_input
from flowengine.core.signals import SignalCount
from flowengine.core.stage import create_stage_node
from flowengine.errors import ConfigError, FlowError
from flowengine.local.fanin import Branch, FanInSource
from flowengine.ops.node import AGAIN, EOF, Node
from flowengine.ops.flownode import make_tap_node
from flowengine.ops.streams import StreamDemux, is_multi_stream
from flowengine.ops.pacing import wait_here, waiting_with
from flowengine.local.pipeline import Pipeline
from flowengine.ops.registry import registry
from flowengine.local.runner import Runner

__all__ = ["run_in_process", "check_in_process", "make_output_dirs", "audit_stages"]


def _audio_seconds(buf: Any) -> float:
    if type(buf) is AudioFrame:
        return buf.samples / buf.format.sample_rate
    duration = getattr(buf, "duration", None) or 0
    if type(buf) is Packet:     # int arithmetic: the same float as float(duration * time_base)
        return duration * buf.time_base_num / buf.time_base_den
    return float(duration * buf.time_base)


def _samples(buf: Any) -> int:
    """Samples per channel; a packet's duration when its time base is 1/sample rate (a
    container's time base, e.g. MP3's 1/14112000, does not count samples: 0)."""
    return clock_samples(buf) or 0


def _count(report: WorkerReport, stream: str, side: str, buf: Any,
           rate: int | None = None) -> int:
    """One buffer in the stage's per-stream counts, as a worker counts it; returns the
    samples counted there."""
    counts = report.stream_counts.get(stream)
    if counts is None:
        counts = report.stream_counts[stream] = new_stream_counts()
    clocks = report.stream_clocks.get(stream)
    if clocks is None:
        clocks = report.stream_clocks[stream] = {}
    return count_buffer(counts, clocks, side, buf, rate)


def _count_skipped_streams(reports: dict[str, WorkerReport], source_stage: str,
                           source: Any, aborted: list[str]) -> None:
    """Streams a multi-stream source skipped after an error (on_error: skip), counted as
    workers count them, for the table and the audit: errors=1 in the source's counts, and
    aborted=1 in those of every stage below that had the stream (`aborted`: the streams the
    demux closed unflushed) when it was cut short."""
    report = reports[source_stage]
    for end in getattr(source, "failed", ()):
        report.errors_skipped += 1
        counts = report.stream_counts.setdefault(end.stream, new_stream_counts())
        counts["errors"] = 1
    for name, below in reports.items():
        for stream in aborted:
            if name != source_stage and stream in below.stream_counts:
                below.stream_counts[stream]["aborted"] = 1


class _Metered(Node):
    """A stage's node with counters in the multiprocess engine's WorkerReport shape."""

    def __init__(self, node: Node, report: WorkerReport,
                 on_output: Callable[[Any], None] | None = None,
                 drain: "SignalCount | None" = None, idle: "_IdleWaits | None" = None) -> None:
        self.node = node
        self.drain = drain      # a source's: EOF once the run is drained
        self.idle = idle        # a source's: its waits inside pull() are not busy
        self.name = node.name
        self.input_kind = node.input_kind
        self.output_kind = node.output_kind
        self.report = report
        self.on_output = on_output
        self.stream: str | None = None   # a stage's node serves one stream (a source: several)

    @property
    def input_format(self):
        return self.node.input_format

    @property
    def output_format(self):
        return self.node.output_format

    def push(self, buf: Any) -> None:
        start = time.perf_counter()
        self.node.push(buf)
        report = self.report
        report.busy_seconds += time.perf_counter() - start
        if buf is not None:
            self.stream = buf.stream
            # Counted without a rate, as _samples counts: the same number for both.
            samples = _count(report, buf.stream, "in", buf)
            report.messages_in += 1
            report.samples_in += samples
            report.seconds_in += _audio_seconds(buf)

    def pull(self) -> Any:
        if self.drain is not None and self.drain.count:
            return EOF
        idle = self.idle
        waited = idle.seconds if idle is not None else 0.0
        start = time.perf_counter()
        out = self.node.pull()
        report = self.report
        report.busy_seconds += time.perf_counter() - start
        if idle is not None:
            report.busy_seconds -= idle.seconds - waited
        if out is AGAIN or out is EOF:      # most pulls: no hasattr (an AttributeError inside)
            return out
        if type(out) is AudioFrame or hasattr(out, "codec"):
            rate = getattr(self.node.output_format, "sample_rate", None)
            stream = self.stream if self.stream is not None else out.stream
            samples = _count(report, stream, "out", out, rate)
            report.messages_out += 1
            # A frame's samples do not depend on the rate; a packet's may (see _samples).
            report.samples_out += samples if type(out) is AudioFrame else _samples(out)
            report.seconds_out += _audio_seconds(out)
            if self.on_output is not None:
                self.on_output(out)
        return out

    def reset(self) -> None:
        self.node.reset()

    def close(self) -> None:
        self.node.close()


class _CountedInputs:
    """A multi-input node as its branches see it: inputs counted in the stage's report."""

    def __init__(self, node: Node, report: WorkerReport) -> None:
        self.node = node
        self.report = report

    def push_input(self, key: tuple[str, str], buf: Any) -> None:
        start = time.perf_counter()
        self.node.push_input(key, buf)
        self.report.busy_seconds += time.perf_counter() - start
        samples = _count(self.report, key[1], "in", buf)   # without a rate: as _samples counts
        self.report.messages_in += 1
        self.report.samples_in += samples
        self.report.seconds_in += _audio_seconds(buf)

    def end_input(self, key: tuple[str, str]) -> None:
        self.node.end_input(key)

    def end_group(self, group: str) -> None:
        self.node.end_group(group)


def _is_mixer(stage: StageInfo) -> bool:
    return stage.kind != "source" and is_multi_input(getattr(stage.spec, "factory", None))


def _paths_into(run: ResolvedRun, mixer: StageInfo) -> list[list[StageInfo]]:
    """Per input of `mixer`: its source and the linear chain of stages after it, or
    ConfigError where the graph is not sources -> chains -> mixer."""
    paths = []
    for name in mixer.inputs:
        path = [run.stage(name)]
        while path[0].inputs:
            stage = path[0]
            if len(stage.inputs) != 1 or len(stage.consumers) != 1:
                raise ConfigError(f"{run.source.where(('stages', stage.index, 'op'))}: stage "
                                  f"{stage.label} feeds {mixer.label} but has "
                                  f"{len(stage.inputs)} inputs and {len(stage.consumers)} "
                                  f"consumers; in one process each input of a mixer is a source "
                                  f"and a plain chain; run it without --in-process")
            path.insert(0, run.stage(stage.inputs[0]))
        if len(path[0].consumers) != 1:
            raise ConfigError(f"{run.source.where(('stages', path[0].index, 'op'))}: source "
                              f"{path[0].label} feeds {mixer.label} and other stages; in one "
                              f"process a mixer's source feeds only it; run it without "
                              f"--in-process")
        paths.append(path)
    return paths


def check_in_process(run: ResolvedRun) -> StageInfo:
    """The stage the in-process runner starts from (the source, or the mixer all sources feed);
    ConfigError naming what it cannot do."""
    mixers = [s for s in run.stages if _is_mixer(s)]
    sources = [s for s in run.stages if not s.inputs]
    if len(mixers) == 1 and len(sources) > 1:
        fed = {stage.name for path in _paths_into(run, mixers[0]) for stage in path}
        if {s.name for s in sources} <= fed:
            return mixers[0]
    if len(sources) != 1:
        names = ", ".join(repr(s.name) for s in sources)
        raise ConfigError(f"{run.source.filename}: the in-process runner takes one source, or "
                          f"several that all feed one mixer; this run has {len(sources)} "
                          f"({names}); run it without --in-process")
    for stage in run.stages:
        if len(stage.inputs) > 1 and not (stage in mixers and len(mixers) == 1):
            raise ConfigError(f"{run.source.where(('stages', stage.index, 'inputs'))}: stage "
                              f"{stage.label} has {len(stage.inputs)} inputs (fan-in), which "
                              f"the in-process runner does not do; run it without --in-process")
    return sources[0]


def make_output_dirs(run: ResolvedRun) -> None:
    """Create the missing directories of every sink's output path (validation checked them)."""
    for stage in run.stages:
        path = stage.params.get("path")
        if stage.kind == "sink" and isinstance(path, str):
            Path(path).absolute().parent.mkdir(parents=True, exist_ok=True)


class _IdleWaits:
    """The waiter (``flowengine.ops.pacing``) of an in-process run: it waits as a plain script
    does and adds up how long, so a paced or outside-fed source's wait for its next buffer
    does not count as busy, as in a worker."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, deadline: float, fd: int | None) -> None:
        start = time.perf_counter()
        wait_here(deadline, fd)
        self.seconds += time.perf_counter() - start


class _Builder:
    """Nodes for each stage, chained down the tree with taps at every fan-out."""

    def __init__(self, run: ResolvedRun, signals: SignalCount) -> None:
        self.run = run
        self.signals = signals
        self.idle = _IdleWaits()
        # One report per stage, shared by the nodes of every stream of that stage.
        self.reports = {stage.name: WorkerReport(stage.name, 0) for stage in run.stages}

    def node(self, stage: StageInfo, on_output=None) -> _Metered:
        source = stage.kind == "source"
        return _Metered(self.bare_node(stage), self.reports[stage.name], on_output,
                        self.signals if source else None, self.idle if source else None)

    def bare_node(self, stage: StageInfo) -> Node:
        node = create_stage_node(stage.op, stage.kind, dict(stage.params),
                                 block_samples=self.run.config.block_samples)
        node.name = stage.name
        return node

    def fan_in(self, mixer_stage: StageInfo, on_output: Callable[[Any], None]) -> Node:
        """The mixer fed by every source's branch, as one source node (inprocess_fanin)."""
        mixer = self.bare_node(mixer_stage)
        report = self.reports[mixer_stage.name]
        for name in mixer_stage.inputs:       # the order of `inputs`, as the engine does
            mixer.expect(name)
        branches = []
        for path in _paths_into(self.run, mixer_stage):
            source = self.node(path[0], on_output)
            group = path[-1].name
            branches.append(Branch(source, group, _CountedInputs(mixer, report),
                                   lambda path=path: [self.node(s) for s in path[1:]],
                                   tuple(s.name for s in path)))
        return FanInSource(_Metered(mixer, report), branches)

    def chain(self, stage: StageInfo) -> list[Node]:
        """`stage` and everything below it, as a flat list ending in a sink node."""
        nodes: list[Node] = [self.node(stage)]
        consumers = [self.run.stage(name) for name in stage.consumers]
        if not consumers:
            if stage.kind != "sink":
                nodes.append(registry.create("null_sink"))
            return nodes
        first, *others = consumers
        for other in others:
            branch = Pipeline(self.chain(other), name=f"branch {other.name!r}")
            nodes.append(make_tap_node(branch, stage.output_kind, name=f"{stage.name} -> "
                                                                      f"{other.name}"))
        return nodes + self.chain(first)


def run_in_process(run: ResolvedRun, *, progress: Callable[[RunReport], None] | None = None,
                   progress_interval: float = 1.0, handle_signals: bool = True) -> RunReport:
    """Run `run` in this process; `progress(report)` about every `progress_interval` seconds.
    `handle_signals`: the first SIGINT/SIGTERM drains the run, a second stops it (module doc)."""
    source_stage = check_in_process(run)
    make_output_dirs(run)
    signals = SignalCount(second=RunInterrupted("interrupted twice: run stopped at once"))
    with signals if handle_signals else contextlib.nullcontext():
        try:
            return _run(run, source_stage, signals, progress, progress_interval)
        except FlowError as exc:
            if not signals.count:
                raise
            # Drained before it ended: e.g. a live source stopped before its first buffer
            # leaves a sink with nothing to finalise. The run was interrupted, not failed.
            interrupted = RunInterrupted("interrupted while draining")
            interrupted.add_note(str(exc))
            raise interrupted from exc


def _run(run: ResolvedRun, source_stage: StageInfo, signals: SignalCount,
         progress: Callable[[RunReport], None] | None, progress_interval: float) -> RunReport:
    builder = _Builder(run, signals)
    started = time.monotonic()
    last = [started]

    def snapshot() -> RunReport:
        wall = time.monotonic() - started
        stages = []
        for stage in run.stages:
            report = builder.reports[stage.name]
            report.busy_percent = 100.0 * report.busy_seconds / wall if wall > 0 else 0.0
            stages.append(StageReport(stage.name, stage.op, stage.kind, [report]))
        audio = max((s.workers[0].seconds_in for s in stages if s.kind == "sink"), default=0.0)
        return RunReport(run.config.name, stages, wall, audio, interrupted=signals.count > 0)

    def on_source_output(_buf: Any) -> None:
        now = time.monotonic()
        if progress is not None and now - last[0] >= progress_interval:
            last[0] = now
            progress(snapshot())

    if source_stage.inputs:               # several sources into one mixer
        source = builder.fan_in(source_stage, on_source_output)
    else:
        source = builder.node(source_stage, on_source_output)

    def downstream() -> list[Node]:
        first = run.stage(source_stage.consumers[0]) if source_stage.consumers else None
        nodes = builder.chain(first) if first else [registry.create("null_sink")]
        for other in source_stage.consumers[1:]:
            branch = Pipeline(builder.chain(run.stage(other)), name=f"branch {other!r}")
            nodes.insert(0, make_tap_node(branch, source_stage.output_kind,
                                          name=f"{source_stage.name} -> {other}"))
        return nodes

    with waiting_with(builder.idle):
        if is_multi_stream(getattr(source, "node", None)):
            demux = StreamDemux(lambda stream: Pipeline(downstream(), name=f"stream {stream!r}"),
                                source_stage.output_kind, None, ends_from=source.node)
            Runner(source, [], demux).run()
            _count_skipped_streams(builder.reports, source_stage.name, source.node,
                                   demux.aborted)
        else:
            nodes = downstream()
            Runner(source, nodes[:-1], nodes[-1]).run()
            for branch in getattr(source, "branches", ()):     # several sources into a mixer
                _count_skipped_streams({name: builder.reports[name] for name in branch.stages},
                                       branch.stages[0], branch.ends_from, branch.demux.aborted)
    for report in builder.reports.values():
        report.done = True
    report = snapshot()
    report.complete = True
    report.audit = audit_report(audit_stages(run), report)
    check_audit(report)       # AuditError (a FlowError) with the report attached
    return report


def audit_stages(run: ResolvedRun) -> list[AuditStage]:
    """The stages of `run` as the sample audit sees them (no fusion in one process)."""
    return [AuditStage(stage.name, stage.op, stage.kind, stage.values or dict(stage.params),
                       tuple(stage.inputs), multi_input=_is_mixer(stage)) for stage in run.stages]
