"""The node machinery every flowengine node shares, and the simplest nodes.

`FlowNode` turns the node protocol (DESIGN §2) into three hooks, so a node
writes only what it does with data:

    _accept(buf)       one input buffer (already checked against input_kind)
    _finish()          end of input: queue or prepare everything still held
    _produce() -> buf | None   the next output, or None when nothing is ready

The base class owns the rules: push after end of input is a FlowError, pull
returns EOF once the input ended and `_produce` has nothing left (and keeps
returning EOF), buffers of the wrong kind are refused, and per-node counters
(`stats()`) are kept.

Nodes here: identity (pass-through), python (wraps a user object with
push/pull) and tap (pass-through that copies every buffer to a sink).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from flowengine.audio.buffers import AudioFrame, Packet
from flowengine.errors import FlowError, FormatError
from flowengine.ops.node import AGAIN, EOF, KINDS, PACKET, PCM, Node

__all__ = [
    "ANY", "NodeStats", "FlowNode", "BatchNode", "IdentityNode", "PythonNode", "TapNode", "SinkHandle",
    "check_kind", "check_buffer", "buffer_samples", "is_buffer",
    "make_identity_node", "make_python_node", "make_tap_node",
]

# A sink input that takes PCM and packets alike (a file writer muxes packets or encodes PCM).
ANY = "any"

_BUFFER_TYPES = {PCM: AudioFrame, PACKET: Packet}
# How many pulls a sink may answer AGAIN after push(None) before it counts as stuck.
_MAX_SINK_IDLE_PULLS = 1000


def check_kind(kind: str | None, what: str, allow: tuple = KINDS) -> str | None:
    """Validate a kind name ("pcm" | "packet", plus ANY/None where allowed)."""
    if kind in allow:
        return kind
    names = ", ".join(repr(k) for k in allow)
    raise FormatError(f"{what}: kind must be one of {names}, got {kind!r}")


def is_buffer(value: Any) -> bool:
    """True for an AudioFrame or a Packet (not for AGAIN, EOF or None)."""
    return isinstance(value, (AudioFrame, Packet))


def check_buffer(buf: Any, kind: str | None, where: str) -> None:
    """Refuse a buffer that is not of `kind` (ANY takes both), naming the node."""
    if kind == ANY and is_buffer(buf):
        return
    expected = _BUFFER_TYPES.get(kind)
    if expected is None:
        raise FormatError(f"{where}: takes no input buffers, got {type(buf).__name__}")
    if not isinstance(buf, expected):
        raise FormatError(f"{where}: expected a {kind} buffer ({expected.__name__}), "
                          f"got {type(buf).__name__}")


def buffer_samples(buf: AudioFrame | Packet) -> int:
    """Samples per channel of a PCM frame; a packet's duration when its time base is a sample
    clock, else 0 (see Packet.samples)."""
    return buf.samples




@dataclass
class NodeStats:
    """What went through one node: buffers, samples, bytes, skipped errors, busy seconds."""

    buffers_in: int = 0
    buffers_out: int = 0
    samples_in: int = 0
    samples_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    errors: int = 0
    seconds: float = 0.0

    def count_in(self, buf: AudioFrame | Packet) -> None:
        self.buffers_in += 1
        self.samples_in += buffer_samples(buf)
        self.bytes_in += _nbytes(buf)

    def count_out(self, buf: AudioFrame | Packet) -> None:
        self.buffers_out += 1
        self.samples_out += buffer_samples(buf)
        self.bytes_out += _nbytes(buf)

    def count_batch_in(self, bufs: list) -> None:
        self.buffers_in += len(bufs)
        self.samples_in += sum(buf.samples for buf in bufs)
        self.bytes_in += sum(buf.nbytes for buf in bufs)

    def count_batch_out(self, bufs: list) -> None:
        self.buffers_out += len(bufs)
        self.samples_out += sum(buf.samples for buf in bufs)
        self.bytes_out += sum(buf.nbytes for buf in bufs)

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)


def _nbytes(buf: AudioFrame | Packet) -> int:
    return buf.nbytes


class FlowNode(Node):
    """Base of flowengine's nodes: protocol rules, kind checks and counters (see module doc)."""

    def __init__(self, name: str, input_kind: str | None, output_kind: str | None) -> None:
        self.name = name
        self.input_kind = input_kind
        self.output_kind = output_kind
        self._ended = False
        self._eof = False
        self._stats = NodeStats()

    # ---- hooks -----------------------------------------------------------------------------

    def _accept(self, buf: AudioFrame | Packet) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """End of input: everything still held must become available to _produce."""

    def _produce(self) -> AudioFrame | Packet | None:
        raise NotImplementedError

    def _restart(self) -> None:
        raise NotImplementedError(f"node {self.name!r} ({type(self).__name__}) cannot be reset")

    # ---- protocol --------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        """push(None) was called: the node is draining or done."""
        return self._ended

    def push(self, buf: AudioFrame | Packet | None) -> None:
        if self._ended:
            raise FlowError(f"node {self.name!r}: push after end of input (push(None) was "
                            f"called); call reset() to start a new stream")
        if buf is None:
            self._ended = True
            self._finish()
            return
        check_buffer(buf, self.input_kind, f"node {self.name!r}")
        self._stats.count_in(buf)
        self._accept(buf)

    def pull(self) -> AudioFrame | Packet | Any:
        if self._eof:
            return EOF
        out = self._produce()
        if out is not None:
            self._stats.count_out(out)
            return out
        if self._ended:
            self._eof = True
            return EOF
        return AGAIN

    def process(self, buf: AudioFrame | Packet) -> list:
        """The stage loop's way in: no per-buffer kind check or counting (the loop counts per
        batch, and checks kinds where buffers enter a stage)."""
        if self._ended:
            raise FlowError(f"node {self.name!r}: process after end of input (finish() was "
                            f"called); call reset() to start a new stream")
        self._accept(buf)
        return self._produced()

    def finish(self) -> list:
        if self._ended:
            raise FlowError(f"node {self.name!r}: finish() called twice; call reset() to start "
                            f"a new stream")
        self._ended = True
        self._finish()
        outs = self._produced()
        self._eof = True
        return outs

    def _produced(self) -> list:
        outs = []
        while (out := self._produce()) is not None:
            outs.append(out)
        return outs

    def reset(self) -> None:
        self._restart()
        self._ended = False
        self._eof = False
        self._stats = NodeStats()

    def stats(self) -> dict[str, int | float]:
        """Counters since creation or the last reset(): buffers/samples/bytes in and out, errors."""
        return self._stats.as_dict()


class BatchNode(FlowNode):
    """A node that knows, for each input, every output it gives (the stage loop's protocol):
    a subclass writes `_outputs(buf) -> list` and `_flush() -> list` (what is left at the
    end), and `_reset()`; `process`/`finish` call them directly, and push/pull go through a
    queue over them, so both ways give the same buffers."""

    def __init__(self, name: str, input_kind: str | None, output_kind: str | None) -> None:
        super().__init__(name, input_kind, output_kind)
        self._queue: deque = deque()

    def _outputs(self, buf: AudioFrame | Packet) -> list:
        raise NotImplementedError

    def _flush(self) -> list:
        return []

    def _reset(self) -> None:
        raise NotImplementedError(f"node {self.name!r} ({type(self).__name__}) cannot be reset")

    def process(self, buf: AudioFrame | Packet) -> list:
        if self._ended:
            raise FlowError(f"node {self.name!r}: process after end of input (finish() was "
                            f"called); call reset() to start a new stream")
        return self._outputs(buf)

    def finish(self) -> list:
        if self._ended:
            raise FlowError(f"node {self.name!r}: finish() called twice; call reset() to start "
                            f"a new stream")
        self._ended = True
        outs = self._flush()
        self._eof = True
        return outs

    def _accept(self, buf: AudioFrame | Packet) -> None:
        self._queue.extend(self._outputs(buf))

    def _finish(self) -> None:
        self._queue.extend(self._flush())

    def _produce(self) -> AudioFrame | Packet | None:
        return self._queue.popleft() if self._queue else None

    def _restart(self) -> None:
        self._queue.clear()
        self._reset()


class IdentityNode(FlowNode):
    """Passes every buffer through unchanged (the same object: zero copy)."""

    def __init__(self, kind: str = PCM, name: str = "identity") -> None:
        check_kind(kind, "identity node")
        super().__init__(name, kind, kind)
        self._queue: deque = deque()

    def _accept(self, buf) -> None:
        self._queue.append(buf)

    def _produce(self):
        return self._queue.popleft() if self._queue else None

    def _restart(self) -> None:
        self._queue.clear()


class PythonNode(FlowNode):
    """A user object with push()/pull() (and optionally flush()/reset()/close()) as a node.

    The object's conventions: pull() returning None means AGAIN before the end
    of input and EOF after it; raising BlockingIOError means AGAIN; raising
    EOFError means EOF. push(None) calls obj.flush() when it has one, else
    obj.push(None). Whatever pull() returns must be a buffer of output_kind.
    """

    def __init__(self, obj: Any, input_kind: str | None, output_kind: str | None,
                 name: str = "py-node") -> None:
        check_kind(input_kind, f"python node {name!r} input_kind", KINDS + (None,))
        check_kind(output_kind, f"python node {name!r} output_kind", KINDS + (None,))
        if not callable(getattr(obj, "pull", None)):
            raise TypeError(f"python node {name!r}: {type(obj).__name__} has no pull() method")
        if input_kind is not None and not callable(getattr(obj, "push", None)):
            raise TypeError(f"python node {name!r}: {type(obj).__name__} has no push() method")
        super().__init__(name, input_kind, output_kind)
        self.obj = obj

    # The object speaks push/pull: the stage loop's calls go through them.
    process = Node.process
    finish = Node.finish

    def _accept(self, buf) -> None:
        self.obj.push(buf)

    def _finish(self) -> None:
        flush = getattr(self.obj, "flush", None)
        if callable(flush):
            flush()
        elif callable(getattr(self.obj, "push", None)):
            self.obj.push(None)

    def pull(self):
        if self._eof:
            return EOF
        try:
            out = self.obj.pull()
        except BlockingIOError:
            return AGAIN
        except EOFError:
            out = EOF
        if out is None:
            out = EOF if self._ended else AGAIN
        if out is EOF:
            self._eof = True
            return EOF
        if out is AGAIN:
            return AGAIN
        if self.output_kind is None:
            raise FormatError(f"python node {self.name!r} has no output, but pull() returned "
                              f"{type(out).__name__}")
        check_buffer(out, self.output_kind, f"python node {self.name!r} output")
        self._stats.count_out(out)
        return out

    def _restart(self) -> None:
        reset = getattr(self.obj, "reset", None)
        if not callable(reset):
            raise NotImplementedError(f"python node {self.name!r}: {type(self.obj).__name__} "
                                      f"has no reset() method")
        reset()

    def close(self) -> None:
        close = getattr(self.obj, "close", None)
        if callable(close):
            close()


class SinkHandle:
    """One way to write to a sink, whether it is a Node or an object with push()/finalize().

    finish() ends the sink exactly once: a Node gets push(None) and is pulled
    to EOF (bounded); an object gets finalize() when it has one.
    """

    def __init__(self, sink: Any, name: str | None = None) -> None:
        if not callable(getattr(sink, "push", None)):
            raise TypeError(f"a sink needs a push() method, {type(sink).__name__} has none")
        self.sink = sink
        self.is_node = isinstance(sink, Node)
        self.name = name or getattr(sink, "name", None) or type(sink).__name__
        self.finished = False

    def deliver(self, buf: AudioFrame | Packet) -> None:
        self.sink.push(buf)
        if self.is_node:
            self._drain(until_eof=False)

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.is_node:
            self.sink.push(None)
            self._drain(until_eof=True)
            return
        finalize = getattr(self.sink, "finalize", None)
        if callable(finalize):
            finalize()

    def _drain(self, until_eof: bool) -> None:
        idle = 0
        while True:
            out = self.sink.pull()
            if out is EOF:
                return
            if out is AGAIN:
                if not until_eof:
                    return
                idle += 1
                if idle >= _MAX_SINK_IDLE_PULLS:
                    raise FlowError(f"sink {self.name!r} returned AGAIN {idle} times after end "
                                    f"of input without reaching EOF")
                if idle > 10:
                    time.sleep(0.0005)   # a sink finishing in another thread: let it run
                continue
            idle = 0
            raise FormatError(f"sink {self.name!r} produced a {type(out).__name__}: a sink "
                              f"has no output")


class TapNode(FlowNode):
    """Pass-through that also copies every buffer to a sink; finishes the sink at EOF."""

    def __init__(self, sink: Any, kind: str = PCM, name: str = "tap") -> None:
        check_kind(kind, "tap node")
        super().__init__(name, kind, kind)
        self.sink = SinkHandle(sink, f"{name} sink")
        self._queue: deque = deque()

    def _accept(self, buf) -> None:
        self.sink.deliver(buf)
        self._queue.append(buf)

    def _finish(self) -> None:
        self.sink.finish()

    def _produce(self):
        return self._queue.popleft() if self._queue else None

    def _restart(self) -> None:
        if self.sink.finished:
            raise NotImplementedError(f"tap node {self.name!r}: its sink was finished; build a "
                                      f"new tap with a new sink")
        self._queue.clear()


def make_identity_node(kind: str = PCM, name: str = "identity") -> IdentityNode:
    """A pass-through node for "pcm" or "packet" buffers."""
    return IdentityNode(kind, name)


def make_python_node(obj: Any, input_kind: str | None, output_kind: str | None,
                     name: str = "py-node") -> PythonNode:
    """Wrap a user object with push()/pull() (+flush/reset) as a node (see PythonNode)."""
    return PythonNode(obj, input_kind, output_kind, name)


def make_tap_node(sink: Any, kind: str = PCM, name: str = "tap") -> TapNode:
    """A pass-through that copies each buffer to `sink` (a Node or an object with push/finalize)."""
    return TapNode(sink, kind, name)
