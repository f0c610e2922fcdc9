"""Run a validated run config in one process with the Runner (the reference semantics).

    report = run_in_process(resolve_run("configs/tone.yaml"), progress=print)

Supported graphs: one source, then a tree. A linear chain runs as
`Runner(source, nodes, sink)`; where a stage feeds several consumers
(fan-out), the first consumer continues the main chain and every other
branch is a `TapNode` whose sink is a `Pipeline` of that branch (taps nest,
so branches may fork again). A stage with no consumer that is not a sink
ends in a `null_sink`. Not supported in one process: fan-in (a stage with
several inputs, e.g. `mix`) and several sources: those run only in the
multiprocess engine, and `run_in_process` says so with a ConfigError.

A multi-stream source (`files`, `tones`) needs one node per stream in every
later stage, as the engine gives it: the chain below the source then runs
inside a `StreamDemux`, one instance per stream id, each flushed (its file
finalised) as soon as the source reports that stream ended.

Every stage's node is wrapped in a meter that counts messages, samples and
seconds of audio in and out, and busy time, so the report has the same shape
as the multiprocess engine's (`RunReport` of `StageReport`s).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .buffers import AudioFrame
from .config.validate import ResolvedRun, StageInfo
from .engine.coordinator import RunReport, StageReport, WorkerReport
from .engine.operators import create_node
from .errors import ConfigError
from .node import Node
from .nodes.basic import make_tap_node
from .nodes.streams import StreamDemux, is_multi_stream
from .pipeline import Pipeline
from .registry import registry
from .runner import Runner

__all__ = ["run_in_process", "check_in_process", "make_output_dirs"]

_MAX_SAMPLE_RATE = 768_000


def _audio_seconds(buf: Any) -> float:
    if isinstance(buf, AudioFrame):
        return buf.samples / buf.format.sample_rate
    duration = getattr(buf, "duration", None) or 0
    return float(duration * buf.time_base)


def _samples(buf: Any) -> int:
    """Samples per channel; a packet's duration when its time base is 1/sample rate (a
    container's time base, e.g. MP3's 1/14112000, does not count samples: 0)."""
    if isinstance(buf, AudioFrame):
        return buf.samples
    time_base = buf.time_base
    if time_base.numerator == 1 and time_base.denominator <= _MAX_SAMPLE_RATE:
        return int(buf.duration or 0)
    return 0


class _Metered(Node):
    """A stage's node with counters in the multiprocess engine's WorkerReport shape."""

    def __init__(self, node: Node, report: WorkerReport,
                 on_output: Callable[[Any], None] | None = None) -> None:
        self.node = node
        self.name = node.name
        self.input_kind = node.input_kind
        self.output_kind = node.output_kind
        self.report = report
        self.on_output = on_output

    @property
    def input_format(self):
        return self.node.input_format

    @property
    def output_format(self):
        return self.node.output_format

    def push(self, buf: Any) -> None:
        start = time.perf_counter()
        self.node.push(buf)
        self.report.busy_seconds += time.perf_counter() - start
        if buf is not None:
            self.report.messages_in += 1
            self.report.samples_in += _samples(buf)
            self.report.seconds_in += _audio_seconds(buf)

    def pull(self) -> Any:
        start = time.perf_counter()
        out = self.node.pull()
        self.report.busy_seconds += time.perf_counter() - start
        if isinstance(out, AudioFrame) or hasattr(out, "codec"):
            self.report.messages_out += 1
            self.report.samples_out += _samples(out)
            self.report.seconds_out += _audio_seconds(out)
            if self.on_output is not None:
                self.on_output(out)
        return out

    def reset(self) -> None:
        self.node.reset()

    def close(self) -> None:
        self.node.close()


def check_in_process(run: ResolvedRun) -> StageInfo:
    """The source of a run the in-process runner can do; ConfigError naming what it cannot."""
    sources = [s for s in run.stages if not s.inputs]
    if len(sources) != 1:
        names = ", ".join(repr(s.name) for s in sources)
        raise ConfigError(f"{run.source.filename}: the in-process runner takes one source, this "
                          f"run has {len(sources)} ({names}); run it without --in-process")
    for stage in run.stages:
        if len(stage.inputs) > 1:
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


class _Builder:
    """Nodes for each stage, chained down the tree with taps at every fan-out."""

    def __init__(self, run: ResolvedRun) -> None:
        self.run = run
        # One report per stage, shared by the nodes of every stream of that stage.
        self.reports = {stage.name: WorkerReport(stage.name, 0) for stage in run.stages}

    def node(self, stage: StageInfo, on_output=None) -> _Metered:
        node = create_node(stage.op, dict(stage.params))
        node.name = stage.name
        return _Metered(node, self.reports[stage.name], on_output)

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
                   progress_interval: float = 1.0) -> RunReport:
    """Run `run` in this process; `progress(report)` about every `progress_interval` seconds."""
    source_stage = check_in_process(run)
    make_output_dirs(run)
    builder = _Builder(run)
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
        return RunReport(run.config.name, stages, wall, audio)

    def on_source_output(_buf: Any) -> None:
        now = time.monotonic()
        if progress is not None and now - last[0] >= progress_interval:
            last[0] = now
            progress(snapshot())

    source = builder.node(source_stage, on_source_output)

    def downstream() -> list[Node]:
        first = run.stage(source_stage.consumers[0]) if source_stage.consumers else None
        nodes = builder.chain(first) if first else [registry.create("null_sink")]
        for other in source_stage.consumers[1:]:
            branch = Pipeline(builder.chain(run.stage(other)), name=f"branch {other!r}")
            nodes.insert(0, make_tap_node(branch, source_stage.output_kind,
                                          name=f"{source_stage.name} -> {other}"))
        return nodes

    if is_multi_stream(source.node):
        demux = StreamDemux(lambda stream: Pipeline(downstream(), name=f"stream {stream!r}"),
                            source_stage.output_kind, None, ends_from=source.node)
        Runner(source, [], demux).run()
    else:
        nodes = downstream()
        Runner(source, nodes[:-1], nodes[-1]).run()
    for report in builder.reports.values():
        report.done = True
    report = snapshot()
    report.complete = True
    return report
