"""The stage loop: one small, I/O-free loop per stage, the same in one process and in a worker.

Theory of operation
-------------------
A stage is fed batches of buffers of one stream at a time and hands what it
makes to its *outlet*, the next thing downstream:

    stage.data(stream, buffers)   a batch of one stream (the first opens the stream)
    stage.end(stream, aborted)    that stream ended: flush its node, pass the end on
                                  (aborted: it was cut short upstream; close it unflushed)
    stage.close()                 one upstream sender is done; when the last is, every
                                  stream still open ends and the outlet closes

Every loop here is itself an outlet, so stages chain by handing one stage to
the one before it. In one process (flowengine.local) that is the whole
runtime: the channels between stages are plain calls. In a worker
(flowengine.engine.worker) the first stage is fed from the inbox and the last
one's outlet is the wire; nothing in this module knows which.

Kinds of loop:

- `StageLoop`: one node per stream (codecs and filters keep per-stream state),
  made by a factory at the stream's first batch; a fused group is one node
  (a `Pipeline`) per stream, with no wrapper per member;
- `MixLoop`: one multi-input node (a mixer) for every input, keyed by the
  upstream stage it comes from (`inlet(group)`);
- `SourceLoop`: pulls a source node, one buffer per step, and passes on the
  ends of the streams it reports.

Counting and timing cost nothing per buffer: each stage adds up a batch
(`len`, and one `sum` of the buffers' samples) on its way in and out, per
stream (`StreamCounts`), for the report and the end-of-run sample audit
(flowengine.core.audit); busy time is measured per batch. A node that fails
on a damaged input (CodecError, WireError) fails the run, or under
``on_error: skip`` is counted against its stream and the stream goes on.
A node that salvages damaged frames itself (a reader or a decoder with
``on_error: skip``, flowengine.ops.codecs.salvage) reports them in its
``damage``; the loop takes that account when the stream ends, into the
stream's counts (what was replaced, and where) and its ``errors_skipped``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from flowengine.audio.buffers import AudioFrame, MAX_SAMPLE_RATE
from flowengine.errors import CodecError, FlowError, WireError
from flowengine.ops.codecs.salvage import describe_damage
from flowengine.ops.node import AGAIN, EOF, Node, pull_outputs

__all__ = ["Outlet", "NullOutlet", "Tee", "StreamCounts", "StageLoop", "MixLoop", "MixInlet",
           "SourceLoop", "clock_rate", "damage_of"]

_perf = time.perf_counter
_samples = attrgetter("samples")     # a slot of both buffers: no Python call per buffer


def clock_rate(buf: Any) -> int:
    """The sample rate a buffer's samples are counted at: a frame's rate; a packet's when its
    time base is 1/rate (0: a container's clock, counted as unclocked by the audit)."""
    if type(buf) is AudioFrame:
        return buf.format.sample_rate
    num, den = buf.time_base_num, buf.time_base_den
    return den if num == 1 and 0 < den <= MAX_SAMPLE_RATE else 0


def damage_of(node: Any) -> dict | None:
    """What a node found damaged in its stream and replaced (its `damage` report's counts:
    flowengine.ops.codecs.salvage), or None."""
    report = getattr(node, "damage", None)
    return report.counts() if report else None


class StreamCounts:
    """What a stage took in and gave out on one stream (summed per batch), and what of it a
    node replaced after damage (`damage`: DamageReport.counts(), set when the stream ends)."""

    __slots__ = ("in_messages", "in_samples", "out_messages", "out_samples", "in_rate",
                 "out_rate", "errors", "aborted", "damage")

    def __init__(self) -> None:
        self.in_messages = self.in_samples = self.out_messages = self.out_samples = 0
        self.in_rate = self.out_rate = None     # 0: packets without a sample clock
        self.errors = self.aborted = 0
        self.damage: dict | None = None

    def add_in(self, bufs: list) -> None:
        self.in_messages += len(bufs)
        self.in_samples += sum(map(_samples, bufs))
        if self.in_rate is None:
            self.in_rate = clock_rate(bufs[0])

    def add_out(self, bufs: list) -> None:
        self.out_messages += len(bufs)
        self.out_samples += sum(map(_samples, bufs))
        if self.out_rate is None:
            self.out_rate = clock_rate(bufs[0])

    def add_through(self, buf: Any) -> None:
        """One buffer a source gives: a source counts what it gives on both sides."""
        samples = buf.samples
        self.in_messages += 1
        self.out_messages += 1
        self.in_samples += samples
        self.out_samples += samples
        if self.in_rate is None:
            self.in_rate = self.out_rate = clock_rate(buf)

    def counts(self) -> dict[str, int]:
        """The audit's shape: messages and samples in and out, errors and aborted when set;
        a side whose packets have no sample clock counts as unclocked (its samples unknown)."""
        counts = {"in_messages": self.in_messages, "in_samples": self.in_samples,
                  "out_messages": self.out_messages, "out_samples": self.out_samples}
        if self.in_rate == 0:
            counts["in_unclocked"] = self.in_messages
        if self.out_rate == 0:
            counts["out_unclocked"] = self.out_messages
        if self.errors:
            counts["errors"] = self.errors
        if self.aborted:
            counts["aborted"] = 1
        if self.damage:
            counts.update(self.damage)
        return counts

    def clocks(self) -> dict[str, int]:
        """The rates the samples were counted at (a side without buffers has none)."""
        clocks = {}
        if self.in_rate is not None:
            clocks["in_rate"] = self.in_rate
        if self.out_rate is not None:
            clocks["out_rate"] = self.out_rate
        return clocks


class Outlet:
    """Where a stage's output goes: the next stage, several (`Tee`), the wire, or nowhere."""

    def data(self, stream: str, bufs: list) -> None:
        raise NotImplementedError

    def end(self, stream: str, aborted: bool = False) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class NullOutlet(Outlet):
    """The outlet of a stage nothing reads (a sink, or a stage without consumers)."""

    def data(self, stream: str, bufs: list) -> None:
        pass

    def end(self, stream: str, aborted: bool = False) -> None:
        pass

    def close(self) -> None:
        pass


class Tee(Outlet):
    """Fan-out: every batch, end and close to each outlet, in order."""

    def __init__(self, outlets: list[Outlet]) -> None:
        self.outlets = outlets

    def data(self, stream: str, bufs: list) -> None:
        for outlet in self.outlets:
            outlet.data(stream, bufs)

    def end(self, stream: str, aborted: bool = False) -> None:
        for outlet in self.outlets:
            outlet.end(stream, aborted)

    def close(self) -> None:
        for outlet in self.outlets:
            outlet.close()


class _Counted:
    """What every loop keeps: per-stream counts, busy seconds, the upstreams still open."""

    def __init__(self, name: str, outlet: Outlet, upstreams: int) -> None:
        self.name = name
        self.outlet = outlet
        self.counts: dict[str, StreamCounts] = {}
        self.busy = 0.0
        self.errors_skipped = 0
        self.upstreams = upstreams
        self.closed = False

    def counts_for(self, stream: str) -> StreamCounts:
        counts = self.counts.get(stream)
        if counts is None:
            counts = self.counts[stream] = StreamCounts()
        return counts

    def note_damage(self, stream: str, damage: dict | None) -> None:
        """A stream's damage account, as its node reported it when the stream ended."""
        if damage:
            self.counts_for(stream).damage = damage
            self.errors_skipped += damage.get("replaced_events", 0)

    def _upstream_closed(self) -> bool:
        """One upstream is done; True when it was the last."""
        if self.closed:
            raise FlowError(f"stage {self.name!r}: closed more often than it has upstreams")
        self.upstreams -= 1
        if self.upstreams > 0:
            return False
        self.closed = True
        return True


class StageLoop(_Counted, Outlet):
    """One stage over many streams: a node per stream from `make_node()` (see module doc).

    `shared`: one node for every stream, ended only at close (the library Runner's chain).
    `on_error`: "skip" counts a CodecError or WireError of a node against its stream and goes
    on (`max_errors` of them at most), "fail" raises it.
    """

    def __init__(self, name: str, make_node: Callable[[], Node], outlet: Outlet, *,
                 upstreams: int = 1, shared: bool = False, on_error: str = "fail",
                 max_errors: int | None = None) -> None:
        super().__init__(name, outlet, upstreams)
        self.make_node = make_node
        self.nodes: dict[str, Node] = {}
        self.ended: set[str] = set()
        self.aborted: list[str] = []
        self._shared = make_node() if shared else None
        self.on_error = on_error
        self.max_errors = max_errors

    def open(self, stream: str) -> Node:
        """The node of a new stream (the engine opens it at the stream's caps)."""
        if stream in self.ended:
            raise FlowError(f"stage {self.name!r}: stream {stream!r} came again after it ended")
        node = self.nodes[stream] = self._shared or self.make_node()
        self.counts_for(stream)
        return node

    def data(self, stream: str, bufs: list) -> None:
        node = self.nodes.get(stream)
        if node is None:
            node = self.open(stream)
        counts = self.counts[stream]
        counts.add_in(bufs)
        outs: list = []
        start = _perf()
        for buf in bufs:
            try:
                outs += node.process(buf)
            except (CodecError, WireError) as exc:
                self._skip(stream, counts, exc)
        self.busy += _perf() - start
        if outs:
            if outs[0].stream != stream:    # a node need not know its stream's id
                for out in outs:
                    out.stream = stream
            counts.out_messages += len(outs)    # (add_out, written out: once per batch)
            counts.out_samples += sum(map(_samples, outs))
            if counts.out_rate is None:
                counts.out_rate = clock_rate(outs[0])
            self.outlet.data(stream, outs)

    def _emit(self, stream: str, counts: StreamCounts, outs: list) -> None:
        if outs[0].stream != stream:
            for out in outs:
                out.stream = stream
        counts.add_out(outs)
        self.outlet.data(stream, outs)

    def _skip(self, stream: str, counts: StreamCounts, exc: Exception) -> None:
        if self.on_error != "skip":
            raise exc
        self.errors_skipped += 1
        counts.errors += 1          # the audit reports the stream as skipped
        if self.max_errors is not None and self.errors_skipped > self.max_errors:
            raise FlowError(f"stage {self.name!r} stream {stream!r}: {self.errors_skipped} "
                            f"errors skipped, over max_errors={self.max_errors}; last: "
                            f"{exc}") from exc

    def end(self, stream: str, aborted: bool = False) -> None:
        node = self.nodes.pop(stream, None)
        if node is None:
            return                  # never opened here: nothing of it came this way
        self.ended.add(stream)
        if self._shared is not None:
            self.outlet.end(stream, aborted)    # the shared node ends with the run
            return
        if aborted:                 # cut short upstream: nothing may finalise it
            node.close()
            self.counts[stream].aborted = 1
            self.aborted.append(stream)
            self.outlet.end(stream, aborted=True)
            return
        start = _perf()
        try:
            outs = node.finish()
        finally:
            node.close()
            self.busy += _perf() - start
        if outs:
            self._emit(stream, self.counts[stream], outs)
        self.note_damage(stream, damage_of(node))
        if self.max_errors is not None and self.errors_skipped > self.max_errors:
            raise FlowError(f"stage {self.name!r} stream {stream!r}: {self.errors_skipped} "
                            f"errors skipped, over max_errors={self.max_errors}; the last "
                            f"stream's: {describe_damage(self.counts[stream].damage or {})}")
        self.outlet.end(stream)

    def close(self) -> None:
        if not self._upstream_closed():
            return
        for stream in list(self.nodes):
            self.end(stream)
        if self._shared is not None:
            self._finish_shared()
        self.outlet.close()

    def _finish_shared(self) -> None:
        node, stream = self._shared, next(iter(self.counts), None)
        start = _perf()
        try:
            outs = node.finish()
        finally:
            self.busy += _perf() - start
        if outs:
            stream = stream or outs[0].stream
            self._emit(stream, self.counts_for(stream), outs)
        if stream is not None:
            self.note_damage(stream, damage_of(node))

    def abort(self) -> None:
        """Close every open node without flushing (the run failed)."""
        for node in self.nodes.values():
            node.close()
        self.nodes.clear()


class MixLoop(_Counted):
    """A multi-input stage (flowengine.ops.multiinput): one node takes every input, keyed by
    (upstream stage, stream id); each upstream stage reaches it through `inlet(stage)`.
    `groups`: the upstream stages in the order of the stage's inputs (the node holds its
    output until each has opened an input or ended)."""

    def __init__(self, name: str, node: Any, outlet: Outlet, groups: list[str]) -> None:
        super().__init__(name, outlet, len(groups))
        self.node = node
        for group in groups:
            node.expect(group)

    @property
    def stream(self) -> str:
        """The stream id of the node's output."""
        return self.node.stream

    def inlet(self, group: str) -> "MixInlet":
        return MixInlet(self, group)

    def data(self, group: str, stream: str, bufs: list) -> None:
        self.counts_for(stream).add_in(bufs)
        start = _perf()
        push = self.node.push_input
        for buf in bufs:
            push((group, stream), buf)
        self.busy += _perf() - start
        self.drain()

    def end(self, group: str, stream: str) -> None:
        """One input ended (aborted or not, the mix goes on without it)."""
        self.node.end_input((group, stream))
        self.drain()

    def group_ended(self, group: str) -> None:
        """Every sender of `group` is done; after the last group the mix flushes."""
        self.node.end_group(group)
        self.drain()
        if self._upstream_closed():
            self._finish()

    def drain(self) -> None:
        """Pass on what the node gives now (a live mixer also gives on the clock)."""
        start = _perf()
        outs = list(pull_outputs(self.node, False, f"stage {self.name!r}"))
        self.busy += _perf() - start
        if outs:
            self._emit(outs)

    def _emit(self, outs: list) -> None:
        stream = self.node.stream
        if outs[0].stream != stream:
            for out in outs:
                out.stream = stream
        self.counts_for(stream).add_out(outs)
        self.outlet.data(stream, outs)

    def _finish(self) -> None:
        start = _perf()
        try:
            outs = self.node.finish()
        finally:
            self.node.close()
            self.busy += _perf() - start
        if outs:
            self._emit(outs)
        self.outlet.end(self.node.stream)
        self.outlet.close()


class MixInlet(Outlet):
    """One upstream stage's way into a MixLoop."""

    def __init__(self, mix: MixLoop, group: str) -> None:
        self.mix, self.group = mix, group

    def data(self, stream: str, bufs: list) -> None:
        self.mix.data(self.group, stream, bufs)

    def end(self, stream: str, aborted: bool = False) -> None:
        self.mix.end(self.group, stream)

    def close(self) -> None:
        self.mix.group_ended(self.group)


class SourceLoop(_Counted):
    """A source node pulled one buffer per `step`; its buffers and the ends of the streams
    it reports (`take_ended_streams`) go to the outlet. A multi-stream source may choose
    (`step(ready)`): only streams for which `ready(stream)` is true."""

    def __init__(self, name: str, node: Node, outlet: Outlet) -> None:
        super().__init__(name, outlet, 1)
        self.node = node
        self.open: set[str] = set()
        self.failed: list[Any] = []     # StreamEnds of streams skipped after an error
        self._take_ended = getattr(node, "take_ended_streams", None)
        self._pull_ready = getattr(node, "pull_ready", None)

    def step(self, ready: Callable[[str], bool] | None = None) -> Any:
        """Pull one buffer and pass it on; returns it, or AGAIN (nothing now) or EOF."""
        start = _perf()
        out = self._pull_ready(ready) if ready is not None and self._pull_ready is not None \
            else self.node.pull()
        self.busy += _perf() - start
        if out is AGAIN or out is EOF:
            self.end_reported()
            return out
        stream = out.stream
        (self.counts.get(stream) or self.counts_for(stream)).add_through(out)
        self.open.add(stream)
        self.outlet.data(stream, [out])
        if self._take_ended is not None:   # a source that ends streams early
            self.end_reported()
        return out

    def end_reported(self) -> None:
        """End at once the streams the source finished (their files close early); one it
        skipped after an error ends aborted and is counted with errors=1."""
        if self._take_ended is None:
            return
        for ended in self._take_ended():
            aborted = ended.error is not None
            self.note_damage(ended.stream, getattr(ended, "damage", None))
            if aborted:
                self.errors_skipped += 1
                self.counts_for(ended.stream).errors = 1
                self.failed.append(ended)
            if ended.stream in self.open:
                self.open.discard(ended.stream)
                self.outlet.end(ended.stream, aborted)

    def close(self) -> None:
        """The source is done (exhausted or drained): every open stream ends, then the run."""
        self.end_reported()
        damage = damage_of(self.node)          # a one-stream source's (a file_source)
        if damage and len(self.counts) == 1:
            self.note_damage(next(iter(self.counts)), damage)
        for stream in sorted(self.open, key=list(self.counts).index):
            self.outlet.end(stream)
        self.open.clear()
        self.closed = True
        self.outlet.close()
