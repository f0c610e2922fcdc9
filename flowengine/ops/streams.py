"""Nodes for runs that carry many streams: multi-stream sources and a per-stream demultiplexer.

A multi-stream source (many files, N tones) says when each of its streams
ends: `take_ended_streams(node)` returns the `StreamEnd`s found since the
last call (an empty list for a source that does not tell). The engine's
source worker sends each stream's end downstream at once, so every node of
that stream is flushed and its sink finalised while other streams go on.

In one process a Runner drives a single chain of nodes, but codecs and
per-stream file sinks need one instance per stream. `StreamDemux` is that
chain: it keeps one inner node (usually a Pipeline) per stream id, made by a
factory at the stream's first buffer, ends a stream's inner node when the
source reports the stream ended (`ends_from=`) or at the end of input, and
gives the outputs of all of them in the order they come. A stream the source
reports ended with an error is aborted instead: its inner node is closed
without a flush, so nothing finalizes it (a file sink keeps ``NAME.part``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from flowengine.audio.buffers import AudioFrame, Packet
from flowengine.errors import FlowError
from flowengine.ops.io.multistream import StreamEnd
from flowengine.ops.node import AGAIN, Node
from flowengine.ops.adapters import SourceNode
from flowengine.ops.flownode import FlowNode, pull_outputs

__all__ = ["MultiStreamSourceNode", "StreamDemux", "StreamEnd", "take_ended_streams",
           "is_multi_stream"]


def take_ended_streams(node: Any) -> list[StreamEnd]:
    """Streams `node` finished since the last call ([] when the node does not report ends)."""
    take = getattr(node, "take_ended_streams", None)
    return take() if callable(take) else []


def is_multi_stream(node: Any) -> bool:
    """True for a source node that reports the end of each of its streams."""
    return callable(getattr(node, "take_ended_streams", None))


class MultiStreamSourceNode(SourceNode):
    """A SourceNode over a multi-stream source (MultiFileSource, MultiToneSource): it reports
    stream ends, and counts streams skipped after an error in stats()["errors"]."""

    def take_ended_streams(self) -> list[StreamEnd]:
        return self.source.take_ended()

    _ready: Callable[[str], bool] | None = None

    def pull_ready(self, ready: Callable[[str], bool]) -> AudioFrame | Packet | Any:
        """Like pull(), but the buffer comes from a stream for which `ready(stream)` is true
        (AGAIN when no stream is ready now). A source that cannot choose answers as pull()."""
        self._ready = ready
        try:
            return self.pull()
        finally:
            self._ready = None

    def _next_item(self) -> Any:
        choose = getattr(self._iter, "next_ready", None)
        if self._ready is None or choose is None:
            return next(self._iter)
        item = choose(self._ready)
        return AGAIN if item is None else item

    @property
    def failed(self) -> list[StreamEnd]:
        return list(getattr(self.source, "failed", []))

    def stats(self) -> dict[str, int | float]:
        self._stats.errors = len(self.failed)
        return super().stats()


class StreamDemux(FlowNode):
    """One inner node per stream id, built by `factory(stream)` (see module doc).

    input_kind / output_kind: those of the inner nodes (output None when they end in a sink).
    ends_from: a multi-stream source node; the streams it reports ended are flushed at the
    next push, so their outputs (files) are complete before the run ends; one that ended
    with an error is aborted (closed unflushed) and its id listed in `aborted`.
    """

    def __init__(self, factory: Callable[[str], Node], input_kind: str,
                 output_kind: str | None, *, ends_from: Any = None,
                 name: str = "stream_demux") -> None:
        super().__init__(name, input_kind, output_kind)
        self.factory = factory
        self.ends_from = ends_from
        self.inner: dict[str, Node] = {}
        self.finished: list[str] = []          # streams flushed and closed, in order
        self.aborted: list[str] = []           # streams closed unflushed after an error
        self._out: deque[AudioFrame | Packet] = deque()

    def _accept(self, buf: AudioFrame | Packet) -> None:
        self.end_reported()
        node = self.inner.get(buf.stream)
        if node is None:
            if buf.stream in self.finished:
                raise FlowError(f"{self.name}: a buffer of stream {buf.stream!r} came after that "
                                f"stream ended")
            node = self.inner[buf.stream] = self.factory(buf.stream)
        node.push(buf)
        self._collect(buf.stream, node, flushing=False)

    def _finish(self) -> None:
        self.end_reported()
        for stream in list(self.inner):
            self.end_stream(stream)

    def _produce(self) -> AudioFrame | Packet | None:
        return self._out.popleft() if self._out else None

    def end_reported(self) -> None:
        """End the streams `ends_from` reported ended since the last look (done at every
        push and at the end; a caller that pulled the source itself may look sooner)."""
        for end in take_ended_streams(self.ends_from):
            if end.stream in self.inner:
                self.end_stream(end.stream, aborted=end.error is not None)

    def end_stream(self, stream: str, aborted: bool = False) -> None:
        """Flush `stream`'s inner node to EOF, keep its outputs, close and drop it; `aborted`
        (cut short after an error): close it without the flush, nothing is finalized."""
        node = self.inner.pop(stream)
        try:
            if not aborted:
                node.push(None)
                self._collect(stream, node, flushing=True)
        finally:
            node.close()
        self.finished.append(stream)
        if aborted:
            self.aborted.append(stream)

    def _collect(self, stream: str, node: Node, flushing: bool) -> None:
        for out in pull_outputs(node, flushing, f"{self.name} stream {stream!r}"):
            if out.stream != stream:
                out.stream = stream      # an inner node may not know its stream id
            self._out.append(out)

    def _restart(self) -> None:
        self.close()
        self.finished.clear()
        self.aborted.clear()
        self._out.clear()

    def close(self) -> None:
        while self.inner:
            _, node = self.inner.popitem()
            node.close()
