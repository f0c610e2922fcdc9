"""Where each message goes between replicas, and how spread streams come back in order.

Theory of operation
-------------------
Every output edge of a worker is routed one of three ways (``OutputEdge.routing``):

- **sticky** (``StickyRouter``): every message of a stream goes to one
  replica, so a stateful operator (codec, filter, resampler, ...) sees its
  whole stream, in order, on one replica. The sender is the only one that
  sends this stream on this edge, so it chooses the replica itself when the
  stream opens: the one with the fewest streams open from this sender, among
  those whose queue has room when any has (ties: the lowest index). A slow
  replica keeps its streams open longer, so new streams go to the others.
  The choice is kept until the stream's eos.
- **hashed** (``StickyRouter(hashed=True)``): sticky by ``crc32(stream id) %
  replicas``, the same answer in every process. Used where several senders
  must agree without talking: out of an ``ordered`` stage, whose replicas
  each send a part of the same stream, and out of a stage with ``restart:
  on-failure``, whose replacement continues the streams of the worker it
  replaces on the same replicas (``build.py`` picks it).
- **balanced** (``BalancedRouter``), into a stage with ``ordered: true`` (a
  stateless operator): each *data* message of a stream may go to any replica.
  The worker asks which replicas have room (their PUSH socket is writable, the
  per-replica HWM being small) and the router picks the next of those in
  round-robin order, so a slow replica gets only what it can take while the
  others keep working. Caps and eos go to *every* replica. Each replica sees a
  protocol-correct part of the stream (its own ``seq`` 0, 1, ... from a
  sender per destination), and each data message carries ``oq``, its index
  in the whole stream; the eos carries ``oe``, the whole stream's count.

A multi-stream source (many files, N tones) never waits on one full replica
while another has room: the source worker asks it for the next buffer of a
stream whose replica has room (``StreamInterleaver.next_ready``), and only
when no stream has room does it wait, bounded, for room on the full ones. A
worker fed by an inbox keeps its input order: it waits for the replica of
the message at hand (its streams come already spread by the source).

A replica of an ordered stage (``OrderStamp``) gives exactly one output per
input, stamped with the input's ``oq`` and pts (its node cannot know the
stream's timeline: it sees only a part), and forwards ``oe`` on its eos.

The receiver after the ordered stage (``OrderedMerge``) gets the parts from
every replica of it. It opens the stream once (first caps), restores ``oq``
order with a bounded ``Reorderer`` and ends the stream exactly once: when
every replica that opened the stream has ended its part and all ``oe``
messages were delivered. A duplicate, a window overflow, disagreeing ``oe``
values, or a gap still open when the run ends is a ``ProtocolError`` naming
the stream and the seq. All of this is pure: no sockets, no clocks.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from flowengine.audio.buffers import AudioFrame, Packet
from flowengine.errors import ConfigError, FlowError
from flowengine.engine.wire.protocol import Event, ProtocolError, Reorderer, RunEnd, StreamCaps, StreamData, \
    StreamEnd, StreamSender
from flowengine.engine.wire.codec import Caps, Part

__all__ = ["STICKY", "HASHED", "BALANCED", "ROUTINGS", "sticky_replica", "StickyRouter",
           "router_for", "BalancedRouter", "OrderStamp", "OrderedMerge", "reorder_window",
           "KERNEL_SLACK_MESSAGES"]

STICKY, HASHED, BALANCED = "sticky", "hashed", "balanced"
ROUTINGS = (STICKY, HASHED, BALANCED)


def sticky_replica(stream: str, replicas: int) -> int:
    """The replica a stream sticks to: the same answer in every process."""
    return zlib.crc32(stream.encode()) % replicas


# Messages that sit in the kernel's socket buffers beyond any HWM (measured here: ~100 KB
# per connection, i.e. dozens of small messages), so the window does not count on HWMs alone.
KERNEL_SLACK_MESSAGES = 256


def reorder_window(replicas: int, hwm: int, downstream_hwm: int = 0) -> int:
    """The reorder window after an ordered stage: how far one stream's parts may run apart.

    A replica can run ahead of the others by what fits in its own queues (`hwm`), the
    queue into the merging stage (`downstream_hwm`, where batches also wait) and the
    kernel's socket buffers; twice that, per replica, bounds the distance between parts."""
    return 2 * replicas * (hwm + downstream_hwm) + KERNEL_SLACK_MESSAGES


class StickyRouter:
    """One replica per stream, kept until the stream's eos (see module doc).

    hashed: crc32 of the stream id (every sender agrees); otherwise the replica with the
        fewest open streams, preferring those for which `has_room(replica)` is true.
    """

    def __init__(self, replicas: int, *, hashed: bool = False,
                 has_room: Callable[[int], bool] | None = None) -> None:
        if replicas < 1:
            raise ConfigError(f"an edge needs at least one replica, got {replicas}")
        self.replicas = replicas
        self.hashed = hashed
        self.has_room = has_room
        self._cache: dict[str, int] = {}
        self.open = [0] * replicas       # streams open per replica
        self.assigned = [0] * replicas   # streams ever given to each replica

    def replica(self, stream: str) -> int:
        choice = self._cache.get(stream)
        if choice is None:
            choice = self._cache[stream] = self._choose(stream)
            self.open[choice] += 1
            self.assigned[choice] += 1
        return choice

    def peek(self, stream: str) -> int | None:
        """The replica `stream` is on, None before its first message."""
        return self._cache.get(stream)

    def _choose(self, stream: str) -> int:
        if self.hashed or self.replicas == 1:
            return sticky_replica(stream, self.replicas)
        candidates = range(self.replicas)
        if self.has_room is not None:
            candidates = [r for r in candidates if self.has_room(r)] or candidates
        return min(candidates, key=self.open.__getitem__)

    def has_room_for(self, stream: str) -> bool:
        """Whether a message of `stream` can go now: its replica has room (any replica, before
        the stream has one). True when the router was not told about room."""
        if self.has_room is None:
            return True
        choice = self._cache.get(stream)
        if choice is not None:
            return self.has_room(choice)
        return any(self.has_room(r) for r in range(self.replicas))

    def forget(self, stream: str) -> None:
        """The stream ended: drop its choice (many short streams stay cheap)."""
        choice = self._cache.pop(stream, None)
        if choice is not None:
            self.open[choice] -= 1


def router_for(routing: str, sender: str, replicas: int,
               has_room: Callable[[int], bool] | None = None) -> StickyRouter | BalancedRouter:
    """The router of one output edge of `sender` (routing: STICKY, HASHED or BALANCED)."""
    if routing == BALANCED:
        return BalancedRouter(sender, replicas)
    return StickyRouter(replicas, hashed=routing == HASHED, has_room=has_room)


class BalancedRouter:
    """Spreads the data messages of each stream over the replicas of an ordered stage.

    `caps`, `data` and `eos` return the parts to send; the caller moves them.
    `choose(writable)` picks the replica for the next data message among those
    with room, in round-robin order (None: no replica has room, wait).
    """

    def __init__(self, sender: str, replicas: int) -> None:
        if replicas < 1:
            raise ConfigError(f"an edge needs at least one replica, got {replicas}")
        self.replicas = replicas
        # One sender per destination: each replica sees its part with seq 0, 1, 2, ...
        self._senders = [StreamSender(sender) for _ in range(replicas)]
        self._orders: dict[str, int] = {}
        self._next = 0
        self.sent = [0] * replicas  # data messages per replica

    def choose(self, writable: Sequence[bool]) -> int | None:
        """The next replica in round-robin order that has room, or None."""
        for step in range(self.replicas):
            replica = (self._next + step) % self.replicas
            if writable[replica]:
                self._next = (replica + 1) % self.replicas
                return replica
        return None

    def caps(self, stream: str, caps: Caps) -> list[tuple[int, list[Part]]]:
        """Caps go to every replica, so each one can open (or change) the stream."""
        self._orders.setdefault(stream, 0)
        return [(r, sender.caps(stream, caps)) for r, sender in enumerate(self._senders)]

    def data(self, replica: int, buffer: AudioFrame | Packet) -> list[Part]:
        """One data message for `replica`, stamped with its index in the whole stream."""
        stream = buffer.stream
        order = self._orders.get(stream, 0)
        parts = self._senders[replica].data(buffer, order=order)
        self._orders[stream] = order + 1
        self.sent[replica] += 1
        return parts

    def eos(self, stream: str, aborted: bool = False) -> list[tuple[int, list[Part]]]:
        """The stream's end to every replica, each with the whole stream's message count."""
        end = self._orders.pop(stream, 0)
        return [(r, sender.eos(stream, order_end=end, aborted=aborted))
                for r, sender in enumerate(self._senders)]


@dataclass
class _Pending:
    order: int
    pts: int | None
    time_base: Fraction | None
    outputs: int = 0


class OrderStamp:
    """The ordered stage's side: one output per input, carrying the input's ``oq`` and pts.

    `take` before an input goes into the node, `stamp` on each output, `done`
    after the node was drained; `end`/`order_end` carry the ``oe`` of a
    stream's eos to the eos the stage sends on.
    """

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._pending: dict[str, _Pending] = {}
        self._ends: dict[str, int] = {}

    def take(self, stream: str, order: int | None, buffer: AudioFrame | Packet) -> None:
        if order is None:
            raise ProtocolError(f"stage {self.stage!r} is ordered but a data message of stream "
                                f"{stream!r} came without its order index ('oq')",
                                problem="order", stream=stream)
        time_base = buffer.time_base if isinstance(buffer, AudioFrame) else \
            Fraction(buffer.time_base_num, buffer.time_base_den)
        self._pending[stream] = _Pending(order, buffer.pts, time_base)

    def stamp(self, stream: str, out: AudioFrame | Packet) -> int:
        """The order index of output `out`; its pts become the input's (rescaled)."""
        pending = self._pending.get(stream)
        if pending is None or pending.outputs:
            what = "at the end of the stream" if pending is None else \
                f"a second buffer for input oq {pending.order}"
            raise FlowError(f"stage {self.stage!r} stream {stream!r}: an ordered stage needs "
                            f"one output per input, but its operator gave {what} (it is not "
                            f"stateless: remove 'ordered: true')")
        pending.outputs += 1
        if pending.pts is not None and isinstance(out, AudioFrame):
            out.pts = round(pending.pts * pending.time_base / out.time_base)
        return pending.order

    def done(self, stream: str) -> None:
        """The input was pushed and the node drained: it must have given exactly one output."""
        pending = self._pending.pop(stream, None)
        if pending is not None and not pending.outputs:
            raise FlowError(f"stage {self.stage!r} stream {stream!r}: an ordered stage needs "
                            f"one output per input, but its operator gave none for oq "
                            f"{pending.order} (it buffers: remove 'ordered: true')")

    def end(self, stream: str, order_end: int | None) -> None:
        if order_end is None:
            raise ProtocolError(f"stage {self.stage!r} is ordered but the eos of stream "
                                f"{stream!r} came without the stream's length ('oe')",
                                problem="order", stream=stream)
        self._ends[stream] = order_end

    def order_end(self, stream: str) -> int | None:
        return self._ends.pop(stream, None)


@dataclass
class _Merging:
    """One stream whose parts come from the replicas of an ordered stage."""

    reorderer: Reorderer
    opened: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)
    order_end: int | None = None
    messages: int = 0
    samples: int = 0
    aborted: bool = False   # one part ended aborted: so does the whole stream


class OrderedMerge:
    """Joins the parts of streams spread over the replicas of an ordered stage.

    `senders` are the replicas of the ordered stage(s) feeding this inbox;
    events from any other sender pass through untouched. `receive` takes the
    events ``InboxState`` made of one message, with that message's ``oq``
    (`order`) and ``oe`` (`order_end`), and returns the events to act on.
    """

    def __init__(self, senders: Iterable[str], window: int, *, stage: str = "") -> None:
        self.senders = frozenset(senders)
        self.window = window
        self.stage = stage
        self._streams: dict[str, _Merging] = {}
        self._ended: set[str] = set()
        self.max_waiting = 0

    def receive(self, events: list[Event], order: int | None = None,
                order_end: int | None = None) -> list[Event]:
        out: list[Event] = []
        for event in events:
            if isinstance(event, RunEnd):
                self._finish_all()
                out.append(event)
            elif getattr(event, "sender", None) not in self.senders:
                out.append(event)
            elif isinstance(event, StreamCaps):
                self._open(event, out)
            elif isinstance(event, StreamData):
                self._data(event, order, out)
            elif isinstance(event, StreamEnd):
                self._end(event, order_end, out)
            else:
                out.append(event)
        return out

    @property
    def open_streams(self) -> list[str]:
        return list(self._streams)

    def _name(self, stream: str) -> str:
        after = f" after ordered stage {self.stage!r}" if self.stage else ""
        return f"stream {stream!r}{after}"

    def _open(self, event: StreamCaps, out: list[Event]) -> None:
        stream = event.stream
        if stream in self._ended:
            raise ProtocolError(f"{self._name(stream)}: caps from {event.sender!r} after the "
                                f"stream ended", problem="ended", sender=event.sender,
                                stream=stream)
        merging = self._streams.get(stream)
        if merging is None:
            merging = self._streams[stream] = _Merging(
                Reorderer(self.window, name=self._name(stream)))
            out.append(StreamCaps(event.sender, stream, event.caps, changed=False))
        # Later caps of the stream's other parts (other replicas) say the same.
        merging.opened.add(event.sender)

    def _data(self, event: StreamData, order: int | None, out: list[Event]) -> None:
        stream = event.stream
        merging = self._streams.get(stream)
        if merging is None:  # InboxState lets no data through before caps: the stream ended
            raise ProtocolError(f"{self._name(stream)}: data from {event.sender!r} after all "
                                f"its messages were delivered", problem="ended",
                                sender=event.sender, stream=stream)
        if order is None:
            raise ProtocolError(f"{self._name(stream)}: data from {event.sender!r} without "
                                f"its order index ('oq')", problem="order", sender=event.sender,
                                stream=stream)
        if merging.order_end is not None and order >= merging.order_end:
            raise ProtocolError(f"{self._name(stream)}: seq {order} from {event.sender!r} is "
                                f"beyond the end ({merging.order_end} message(s))",
                                problem="window", sender=event.sender, stream=stream)
        ready = merging.reorderer.push(order, event)
        self.max_waiting = max(self.max_waiting, merging.reorderer.waiting)
        for data in ready:
            buffer = data.buffer
            merging.messages += 1
            merging.samples += buffer.samples if isinstance(buffer, AudioFrame) else 0
        out.extend(ready)
        self._maybe_complete(stream, merging, out)

    def _end(self, event: StreamEnd, order_end: int | None, out: list[Event]) -> None:
        stream = event.stream
        merging = self._streams.get(stream)
        if merging is None:  # InboxState lets no eos through before caps: a broken feed
            if stream in self._ended:
                raise ProtocolError(f"{self._name(stream)}: eos from {event.sender!r} after "
                                    f"the stream ended", problem="ended", sender=event.sender,
                                    stream=stream)
            raise ProtocolError(f"{self._name(stream)}: eos from {event.sender!r} for a stream "
                                f"no replica opened", problem="order", sender=event.sender,
                                stream=stream)
        if order_end is None:
            raise ProtocolError(f"{self._name(stream)}: eos from {event.sender!r} without the "
                                f"stream's length ('oe')", problem="order", sender=event.sender,
                                stream=stream)
        if merging.order_end is not None and merging.order_end != order_end:
            raise ProtocolError(f"{self._name(stream)}: eos from {event.sender!r} says "
                                f"{order_end} message(s), another replica said "
                                f"{merging.order_end}", problem="incomplete",
                                sender=event.sender, stream=stream)
        if order_end < merging.reorderer.next_seq:
            raise ProtocolError(f"{self._name(stream)}: seq {merging.reorderer.next_seq - 1} "
                                f"is beyond the end ({order_end} message(s))", problem="window",
                                sender=event.sender, stream=stream)
        merging.order_end = order_end
        merging.ended.add(event.sender)
        merging.aborted |= event.aborted
        self._maybe_complete(stream, merging, out)

    def _maybe_complete(self, stream: str, merging: _Merging, out: list[Event]) -> None:
        """End the stream once: every opened part ended and every message delivered."""
        if merging.order_end is None or merging.ended != merging.opened or \
                merging.reorderer.next_seq != merging.order_end:
            return
        merging.reorderer.finish(merging.order_end)
        del self._streams[stream]
        self._ended.add(stream)
        out.append(StreamEnd(sorted(merging.opened)[0], stream, merging.messages,
                             merging.samples, aborted=merging.aborted))

    def _finish_all(self) -> None:
        """The run ended: a stream still merging has a gap, or lost the eos of a part."""
        for stream, merging in self._streams.items():
            if merging.order_end is None:
                raise ProtocolError(f"{self._name(stream)}: the run ended before the eos of "
                                    f"any replica's part", problem="incomplete", stream=stream)
            merging.reorderer.finish(merging.order_end)
            unended = sorted(merging.opened - merging.ended)
            if unended:     # every message came, but the stream was never ended
                raise ProtocolError(f"{self._name(stream)}: the run ended before the eos of "
                                    f"the part from {', '.join(map(repr, unended))}",
                                    problem="incomplete", stream=stream)
