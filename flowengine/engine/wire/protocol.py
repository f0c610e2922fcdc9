"""The per-edge stream protocol as pure state machines: no sockets, no clocks, no threads.

Theory of operation
-------------------
On an edge, every stream a sender carries goes through one small machine::

    IDLE --caps--> OPEN --(data | caps)*--> OPEN --eos--> ENDED

and the messages of one (sender, stream) pair, caps and eos included, are
numbered 0, 1, 2, ... in their ``seq``, so the receiver sees any loss or
repeat. The eos carries how many data messages and PCM samples were sent, so
the receiver can check that the stream arrived complete. When a sender has
ended all its streams it sends ``eof``; an inbox's run ends once ``eof`` has
come from every sender it knows: the end falls out of counting the open
senders, as with AnyIO's memory streams.

- ``StreamSender``: the sending half. Numbers messages, enforces the order,
  counts, and returns encoded parts (``flowengine.engine.wire.codec``).
- ``InboxState``: the receiving half, for one worker inbox fed by several
  senders. Takes decoded ``Message``s, returns events (``StreamCaps``,
  ``StreamData``, ``StreamEnd``, ``SenderEnd``, ``RunEnd``, ``Violation``);
  ``next_data`` is its short way for the next data message of an open stream
  (a buffer, no Message, no events; None sends the message to ``receive``).
- ``Reorderer``: restores ``seq`` order inside a bounded window, for a stream
  spread round-robin over the replicas of a stateless stage.

Workers only move bytes between sockets and these objects. Every problem is a
``ProtocolError`` (a ``WireError``) naming the sender, the stream, and what
was expected vs what came. Gaps, duplicates and incomplete streams are what a
lossy edge produces; ``InboxState(on_loss="report")`` turns those into
``Violation`` events instead (counted, never silent). Order violations
(data before caps, anything after eos or eof, an unknown sender) mean a
broken sender and always raise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Literal, NamedTuple, TypeVar

from flowengine.audio.buffers import AudioFrame, Packet
from flowengine.errors import ConfigError, WireError
from flowengine.ops.node import PCM
from flowengine.engine.recovery.indexed import IndexedStreams
from flowengine.engine.plan import split_generation
from flowengine.engine.wire.codec import Caps, Message, Part, buffer_from, data_buffer, \
    data_header, encode_caps, encode_data, encode_eof, encode_eos, message_nbytes

__all__ = [
    "ProtocolError", "StreamSender", "SenderStatistics", "InboxState", "InboxStatistics",
    "StreamCaps", "StreamData", "StreamEnd", "SenderEnd", "RunEnd", "Violation", "Event",
    "Reorderer",
]

T = TypeVar("T")

IDLE, OPEN, ENDED = "idle", "open", "ended"
# The whole per-stream machine. Anything not listed is refused.
_TRANSITIONS: dict[tuple[str, str], str] = {
    (IDLE, "caps"): OPEN,
    (OPEN, "caps"): OPEN,  # a format change mid-stream: later data follows the new caps
    (OPEN, "data"): OPEN,
    (OPEN, "eos"): ENDED,
}


class ProtocolError(WireError):
    """A message broke the edge protocol. `problem` is a short code for the kind of fault:
    order, gap, duplicate, incomplete, caps_mismatch, payload, unknown_sender, eof, ended,
    window."""

    def __init__(self, message: str, *, problem: str, sender: str | None = None,
                 stream: str | None = None) -> None:
        super().__init__(message)
        self.problem = problem
        self.sender = sender
        self.stream = stream


@dataclass
class _Stream:
    """What one side knows about one (sender, stream) pair."""

    state: str = IDLE
    next_seq: int = 0
    caps: Caps | None = None
    messages: int = 0  # data messages
    samples: int = 0   # PCM samples per channel
    resumed: bool = False  # opened mid-stream by a replacement worker (no completeness check)
    may_skip: bool = False  # opened by caps in a replacement: the next message may skip seqs
    plain: bool = False     # a receiver's record of a sender that is not indexed (`next_data`)
    header: list | None = None   # a sender's data header for the stream (codec.data_header)


def _where(sender: str, stream: str) -> str:
    return f"sender {sender!r} stream {stream!r}"


def _advance(record: _Stream, event: str, sender: str, stream: str) -> str:
    """The next state after `event`, or a ProtocolError saying why it is refused."""
    try:
        return _TRANSITIONS[(record.state, event)]
    except KeyError:
        after = "before caps" if record.state == IDLE else "after eos"
        raise ProtocolError(f"{_where(sender, stream)}: {event} {after}", problem="order",
                            sender=sender, stream=stream) from None


def _check_matches_caps(caps: Caps, buffer: AudioFrame | Packet, sender: str) -> None:
    """A sender's buffer must travel under its stream's caps: the receiver builds it from
    them (the data header carries no format, codec or time base)."""
    if caps.describes(buffer):
        return
    if isinstance(buffer, AudioFrame) != (caps.kind == PCM):
        got = "pcm" if isinstance(buffer, AudioFrame) else "packet"
        problem = f"{got} data on a {caps.kind} stream"
    elif isinstance(buffer, AudioFrame) and buffer.format != caps.format:
        problem = f"frame format {buffer.format} differs from the caps' {caps.format}"
    elif isinstance(buffer, Packet) and buffer.codec != caps.codec:
        problem = f"packet codec {buffer.codec!r} differs from the caps' {caps.codec!r}"
    else:
        problem = f"time base {buffer.time_base} differs from the caps' {caps.time_base}"
    raise ProtocolError(f"{_where(sender, buffer.stream)}: {problem}", problem="caps_mismatch",
                        sender=sender, stream=buffer.stream)


def _open_streams(streams: dict[str, _Stream]) -> list[str]:
    return [name for name, record in streams.items() if record.state == OPEN]


# ------------------------------------------------------------------------ sender

class SenderStatistics(NamedTuple):
    streams_open: int
    streams_ended: int
    messages: int
    data_messages: int
    samples: int
    packets: int
    bytes: int


class StreamSender:
    """The sending half of an edge for one sender id ("stage:replica").

    Each method checks the protocol, updates the counts and returns the parts
    to send; where they go (which downstream replica) is the caller's choice.
    """

    def __init__(self, sender: str, *, index_data: bool = False) -> None:
        self.sender = sender
        # Stamp every data message with its index in the stream (``oq``): the receiver is a
        # losslessly restarting stage (``replay.py``) that stamps its outputs with it.
        self.index_data = index_data
        self._streams: dict[str, _Stream] = {}
        self._eof_sent = False
        self._messages = self._bytes = 0
        # (kind, stream, data index) of the message just built: the replay buffer's bookkeeping.
        self.last: tuple[str, str, int | None] = ("", "", None)
        self.last_nbytes = 0    # the size of the message just built

    def caps(self, stream: str, caps: Caps) -> list[Part]:
        """Announce (or change) what `stream` carries."""
        record = self._record("caps", stream)
        state = _advance(record, "caps", self.sender, stream)
        parts = encode_caps(stream, record.next_seq, caps, sender=self.sender)
        if record.caps is None or record.caps.kind != caps.kind:
            record.header = data_header(caps.kind, stream, self.sender)
        record.state, record.caps = state, caps
        self.last = ("caps", stream, None)
        return self._sent(record, stream, parts)

    def data(self, buffer: AudioFrame | Packet, *, order: int | None = None) -> list[Part]:
        """One AudioFrame or Packet of an open stream (`order`: its index in a spread stream)."""
        stream = buffer.stream
        record = self._streams.get(stream)
        # An open stream (so no eof yet) whose caps describe the buffer: nothing to refuse.
        if record is None or record.state != OPEN or not record.caps.describes(buffer):
            record = self._record("data", stream)
            _advance(record, "data", self.sender, stream)
            _check_matches_caps(record.caps, buffer, self.sender)
        if order is None and self.index_data:
            order = record.messages
        self.last = ("data", stream, order)
        # The stream's header, packed with this message's fields in one call.
        header = record.header if order is None else \
            data_header(record.caps.kind, stream, self.sender, order)
        parts = encode_data(header, buffer, record.next_seq)
        if isinstance(buffer, AudioFrame):
            record.samples += buffer.samples
        record.messages += 1
        return self._sent(record, stream, parts)

    def eos(self, stream: str, *, order_end: int | None = None,
            aborted: bool = False) -> list[Part]:
        """End `stream`; the eos carries its message and sample counts (and `order_end`, the
        data messages of the whole stream when it was spread over replicas; `aborted` when
        the stream was cut short after an error)."""
        record = self._record("eos", stream)
        state = _advance(record, "eos", self.sender, stream)
        parts = encode_eos(stream, record.next_seq, messages=record.messages,
                            samples=record.samples, sender=self.sender, order_end=order_end,
                            aborted=aborted)
        record.state = state
        self.last = ("eos", stream, None)
        return self._sent(record, stream, parts)

    def eof(self) -> list[Part]:
        """End of the run from this sender; every stream must have had its eos."""
        self._check_not_ended("eof")
        still_open = _open_streams(self._streams)
        if still_open:
            names = ", ".join(repr(s) for s in still_open)
            raise ProtocolError(f"sender {self.sender!r}: eof while stream(s) {names} still "
                                f"open (no eos)", problem="eof", sender=self.sender)
        self._eof_sent = True
        self.last = ("eof", "", None)
        parts = encode_eof(self.sender)
        self._messages += 1
        self._bytes += message_nbytes(parts)
        return parts

    @property
    def open_streams(self) -> list[str]:
        """Streams that had caps but no eos yet, in the order they were opened."""
        return _open_streams(self._streams)

    @property
    def eof_sent(self) -> bool:
        return self._eof_sent

    def current_caps(self, stream: str) -> Caps | None:
        """The caps in effect on an open `stream` (None if it is not open)."""
        record = self._streams.get(stream)
        return record.caps if record is not None and record.state == OPEN else None

    def statistics(self) -> SenderStatistics:
        records = self._streams.values()
        return SenderStatistics(
            streams_open=sum(r.state == OPEN for r in records),
            streams_ended=sum(r.state == ENDED for r in records),
            messages=self._messages,
            data_messages=sum(r.messages for r in records),
            samples=sum(r.samples for r in records),
            packets=sum(r.messages for r in records if r.caps is not None and r.caps.kind != PCM),
            bytes=self._bytes)

    def _record(self, event: str, stream: str) -> _Stream:
        self._check_not_ended(event)
        return self._streams.get(stream) or _Stream()

    def _check_not_ended(self, event: str) -> None:
        if self._eof_sent:
            raise ProtocolError(f"sender {self.sender!r}: {event} after eof", problem="ended",
                                sender=self.sender)

    def _sent(self, record: _Stream, stream: str, parts: list[Part]) -> list[Part]:
        self._streams[stream] = record
        record.next_seq += 1
        self._messages += 1
        self.last_nbytes = nbytes = message_nbytes(parts)
        self._bytes += nbytes
        return parts


# ---------------------------------------------------------------------- receiver

@dataclass(frozen=True)
class StreamCaps:
    """A stream started (changed=False) or announced new caps (changed=True)."""

    sender: str
    stream: str
    caps: Caps
    changed: bool


@dataclass(frozen=True)
class StreamData:
    """One buffer, in order. Packets carry the extradata of their stream's caps."""

    sender: str
    stream: str
    seq: int
    buffer: AudioFrame | Packet


@dataclass(frozen=True)
class StreamEnd:
    """A stream ended, with what was received on it; `aborted`: cut short after an error
    upstream (what came is all there is, but not the whole stream: do not finalize it)."""

    sender: str
    stream: str
    messages: int
    samples: int
    aborted: bool = False


@dataclass(frozen=True)
class SenderEnd:
    """A sender sent its eof."""

    sender: str


@dataclass(frozen=True)
class RunEnd:
    """Every sender of the inbox has sent its eof: flush and finish. Comes exactly once."""


@dataclass(frozen=True)
class Violation:
    """A gap, duplicate or incomplete stream, reported instead of raised (on_loss="report")."""

    error: ProtocolError


Event = StreamCaps | StreamData | StreamEnd | SenderEnd | RunEnd | Violation


class InboxStatistics(NamedTuple):
    senders: int
    senders_open: int
    streams_open: int
    streams_ended: int
    messages: int
    data_messages: int
    samples: int
    packets: int
    bytes: int
    violations: int
    dropped: int
    duplicates: int = 0    # data a replacement sent again and this inbox already had (indexed)
    index_gaps: int = 0    # data indices an indexed sender's replacement skipped (lost)


class InboxState:
    """The receiving half of every edge into one worker inbox.

    `senders` are the ids of everything that feeds the inbox (e.g.
    {"decode:0", "decode:1"}). `receive` takes each decoded message and returns
    the events it produces; `RunEnd` comes once, after the last sender's eof.

    Restarts (``docs/architecture.md``, Restart): a replacement of sender
    "decode:0" sends as "decode:0@1" (then "@2", ...), with its own numbering.
    Its first message retires the older generations: their open streams are
    abandoned (no eos expected), anything still arriving from them is dropped
    and counted (`dropped`), and the eof that ends the sender is the newest
    generation's. Events always name the sender without its generation.
    `resumed=True` is the inbox of a replacement worker: a stream it meets
    in the middle is dropped (counted) up to its next caps, which opens it at
    that caps' seq; the message after that caps may skip seqs (a replay from a
    sender's buffer starts with the stream's caps, then its first message not
    yet acknowledged); its eos is then not checked for completeness (the part
    the dead worker had is not here).

    `indexed` senders are the replicas of a stage that restarts losslessly
    (``replay.py``): their data carry the index of the input they came from
    (``oq``), the same in every generation. A newer generation starts again
    at or before what this inbox has, so data with an index it already
    delivered are dropped (`duplicates`, still counted for the eos check) and
    so is everything of a stream that already ended here. `progress` and
    `take_ended` say how far each of their streams got: what the consumer
    acknowledges. Their index bookkeeping (``indexed.IndexedStreams``) is
    pruned as streams end and the coordinator says they are forgotten
    (`forget`); the per-stream records here are not (they keep the counts and
    refuse a reused stream id), so they grow with the streams of a run.

    A newer generation of any sender whose eof already came (it died after
    its eof, before it reported done) is dropped whole: that sender's streams
    had all ended complete, so nothing of the replacement is new.
    """

    def __init__(self, senders: Iterable[str], *,
                 on_loss: Literal["raise", "report"] = "raise", resumed: bool = False,
                 indexed: Iterable[str] = ()) -> None:
        self.senders = frozenset(senders)
        if not self.senders:
            raise ConfigError("an inbox needs at least one sender")
        if on_loss not in ("raise", "report"):
            raise ConfigError(f"on_loss must be 'raise' or 'report', got {on_loss!r}")
        self.on_loss = on_loss
        self.resumed = resumed
        self._generations: dict[str, int] = {}
        self._open = set(self.senders)
        # Every sender of the inbox has sent its eof (an attribute: a receive loop's test).
        self.run_ended = False
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._messages = self._bytes = self._violations = self._dropped = 0
        self._eof_generation: dict[str, int] = {}
        self._wire_ids: dict[str, tuple[str, int]] = {}   # "decode:0@1" -> ("decode:0", 1)
        self.indexed = frozenset(indexed)
        self.index = IndexedStreams(self.indexed)

    @property
    def open_senders(self) -> frozenset[str]:
        return frozenset(self._open)

    def receive(self, message: Message) -> list[Event]:
        """Check one message against the protocol and return what it means."""
        sender, wire = self._check_sender(message)
        self._messages += 1
        self._bytes += message.nbytes
        if wire is None:          # a retired generation of a restarted sender
            self._dropped += 1
            return []
        if message.kind == "eof":
            return self._receive_eof(sender, wire)
        stream = message.stream
        key = (wire, stream)
        record = self._streams.get(key)
        if record is None:
            if sender in self.indexed and self.index.ended(sender, stream):
                # a replacement's replay of a stream that ended here
                self.index.replayed(sender, stream, message.kind, split_generation(wire)[1],
                                    self._generations.get(sender, 0))
                return []
            if self.resumed and message.kind != "caps":
                self._dropped += 1    # the middle of a stream, before its replayed caps
                return []
            record = _Stream(may_skip=self.resumed, plain=sender not in self.indexed)
            if self.resumed and message.seq:
                record.next_seq, record.resumed = message.seq, True
        elif record.may_skip and record.messages == 0 and message.seq > record.next_seq:
            # A replay: the caps in effect, then the first message not acknowledged.
            record.next_seq, record.resumed = message.seq, True
        events: list[Event] = []
        if message.seq != record.next_seq:
            error = self._seq_error(record.next_seq, message.seq, sender, stream)
            if error.problem == "duplicate":
                self._dropped += 1
                return self._loss(error, [])
            self._loss(error, events)
        event = "data" if message.kind in ("pcm", "pkt") else message.kind
        state = _advance(record, event, sender, stream)
        if event == "caps":
            caps = message.info["caps"]
            events.append(StreamCaps(sender, stream, caps, changed=record.caps is not None))
            record.caps = caps
        elif event == "data":
            data = self._data(record, sender, message)
            if sender not in self.indexed or self.index.is_new(sender, stream, message.order):
                events.append(data)
        else:
            events.append(self._eos(record, sender, stream, message.info, events))
            if sender in self.indexed:
                self.index.end(sender, stream, split_generation(wire)[1])
        record.state = state
        record.next_seq = message.seq + 1
        self._streams[key] = record
        return events

    def next_data(self, header: list, payload: memoryview, nbytes: int
                  ) -> AudioFrame | Packet | None:
        """`receive`'s fast path, for a live stream's steady state: the buffer of a checked
        data message (``codec.checked_messages``: its header array and payload) when it is the
        next one (by seq) of an open stream of a sender that is not indexed, counted as
        `receive` counts it; no Message, no events. None for anything else, counted
        nowhere: give it to `receive` (a gap, a duplicate, a payload that is not what the
        caps say, an unknown or retired sender, ...: its answer is the general one).

        An open record of this wire id means `receive` would accept the sender as it is:
        a retired generation's streams, a sender's after its eof and everything after the
        run's end are closed, and data carry the sender's wire id (generation included)."""
        record = self._streams.get((header[4], header[2]))
        if record is None or not record.plain or record.state != OPEN or \
                header[3] != record.next_seq:
            return None
        try:
            buffer = data_buffer(header, payload, record.caps)
        except WireError:
            return None     # `receive` says what is wrong with it, as a ProtocolError
        self._messages += 1
        self._bytes += nbytes
        record.next_seq += 1
        record.messages += 1
        if header[1] == "pcm":
            record.samples += header[7]
        return buffer

    def statistics(self) -> InboxStatistics:
        records = self._streams.values()
        return InboxStatistics(
            senders=len(self.senders), senders_open=len(self._open),
            streams_open=sum(r.state == OPEN for r in records),
            streams_ended=sum(r.state == ENDED for r in records),
            messages=self._messages,
            data_messages=sum(r.messages for r in records),
            samples=sum(r.samples for r in records),
            packets=sum(r.messages for r in records if r.caps is not None and r.caps.kind != PCM),
            bytes=self._bytes, violations=self._violations, dropped=self._dropped,
            duplicates=self.index.duplicates, index_gaps=self.index.gaps)

    @property
    def delivered(self) -> int:
        """Data events given out from indexed senders (ack pacing)."""
        return self.index.delivered

    @property
    def indexed_streams_ended(self) -> int:
        """Streams of indexed senders that ended here, over the run (ack pacing)."""
        return self.index.ended_count

    def progress(self, sender: str) -> dict[str, int]:
        """For an indexed `sender`: per open stream the next data index this inbox expects
        (what the consumer acknowledges, ``replay.py``)."""
        return self.index.progress(sender)

    def take_ended(self, sender: str) -> list[str]:
        """For an indexed `sender`: the streams that ended here since the last call."""
        return self.index.take_ended(sender)

    def take_again(self, sender: str) -> list[str]:
        """For an indexed `sender`: the ended streams a replay brought again since the last
        call (their end is reported again, ``indexed.py``)."""
        return self.index.take_again(sender)

    def forget(self, sender: str, streams: Iterable[str], generation: int,
               replayed: Iterable[str]) -> None:
        """The coordinator's ``forget`` of ended `streams` of indexed `sender`
        (``indexed.py``: when the mark that drops their replays may go)."""
        if sender in self.indexed:
            self.index.forget(sender, streams, generation, replayed,
                              self._generations.get(sender, 0))

    def _check_sender(self, message: Message) -> tuple[str, str | None]:
        """(sender id without generation, wire id); the wire id is None for a message of a
        generation that a newer one has replaced."""
        wire, kind = message.sender, message.kind
        parsed = self._wire_ids.get(wire)
        if parsed is None:
            parsed = split_generation(wire) if wire is not None else (None, 0)
            if parsed[0] in self.senders:   # bounded: the known senders' generations
                self._wire_ids[wire] = parsed
        sender, generation = parsed
        if generation > self._eof_generation.get(sender, generation):
            return sender, None   # a replacement of a sender that had finished (see class doc)
        if not self._open:
            raise ProtocolError(f"{kind} from {sender!r} after the run ended (eof from every "
                                f"sender)", problem="ended", sender=sender)
        if sender is None:
            raise ProtocolError(f"{kind} message without a sender id ('src')",
                                problem="unknown_sender")
        if sender not in self.senders:
            known = ", ".join(repr(s) for s in sorted(self.senders))
            raise ProtocolError(f"{kind} from unknown sender {sender!r} (expected one of "
                                f"{known})", problem="unknown_sender", sender=sender)
        current = self._generations.get(sender, 0)
        if generation < current:
            return sender, None
        if sender not in self._open:
            raise ProtocolError(f"sender {sender!r}: {kind} after its eof", problem="ended",
                                sender=sender)
        if generation > current:
            self._retire(sender, generation)
        return sender, wire

    def _retire(self, sender: str, generation: int) -> None:
        """Generation `generation` of `sender` took over: abandon the older ones' streams."""
        self._generations[sender] = generation
        if sender in self.indexed:
            self.index.generation_changed(sender, generation)
        for (wire, stream), record in self._streams.items():
            if record.state == OPEN and split_generation(wire)[0] == sender:
                record.state = ENDED

    def _receive_eof(self, sender: str, wire: str) -> list[Event]:
        still_open = [stream for (s, stream), r in self._streams.items()
                      if s == wire and r.state == OPEN]
        if still_open:
            names = ", ".join(repr(s) for s in still_open)
            raise ProtocolError(f"sender {sender!r}: eof while stream(s) {names} still open "
                                f"(no eos)", problem="eof", sender=sender)
        self._open.discard(sender)
        self.run_ended = not self._open
        self._eof_generation[sender] = split_generation(wire)[1]
        return [SenderEnd(sender), RunEnd()] if not self._open else [SenderEnd(sender)]

    @staticmethod
    def _seq_error(expected: int, got: int, sender: str, stream: str) -> ProtocolError:
        where = _where(sender, stream)
        if got > expected:
            return ProtocolError(f"{where}: gap: expected seq {expected}, got {got} "
                                 f"({got - expected} message(s) missing)", problem="gap",
                                 sender=sender, stream=stream)
        return ProtocolError(f"{where}: duplicate or out of order: expected seq {expected}, "
                             f"got {got}", problem="duplicate", sender=sender, stream=stream)

    def _loss(self, error: ProtocolError, events: list[Event]) -> list[Event]:
        if self.on_loss == "raise":
            raise error
        self._violations += 1
        events.append(Violation(error))
        return events

    @staticmethod
    def _data(record: _Stream, sender: str, message: Message) -> StreamData:
        """The buffer of a data message, built with its stream's caps."""
        caps = record.caps
        if (message.kind == "pcm") != (caps.kind == PCM):
            got = "pcm" if message.kind == "pcm" else "packet"
            raise ProtocolError(f"{_where(sender, message.stream)}: {got} data on a "
                                f"{caps.kind} stream", problem="caps_mismatch", sender=sender,
                                stream=message.stream)
        buffer = message.buffer
        if buffer is None:
            try:
                buffer = message.buffer = buffer_from(message, caps)
            except WireError as exc:   # a payload that is not what the caps and header say
                raise ProtocolError(f"sender {sender!r}: {exc}", problem="payload",
                                    sender=sender, stream=message.stream) from None
        record.samples += message.samples
        record.messages += 1
        return StreamData(sender, message.stream, message.seq, buffer)

    def _eos(self, record: _Stream, sender: str, stream: str, info: dict,
             events: list[Event]) -> StreamEnd:
        sent = (info["messages"], info["samples"])
        if sent != (record.messages, record.samples) and not record.resumed:
            self._loss(ProtocolError(
                f"{_where(sender, stream)}: incomplete: eos says {sent[0]} message(s), "
                f"{sent[1]} sample(s); received {record.messages}, {record.samples}",
                problem="incomplete", sender=sender, stream=stream), events)
        return StreamEnd(sender, stream, record.messages, record.samples,
                         aborted=info.get("aborted", False))


# --------------------------------------------------------------------- reorderer

class Reorderer(Generic[T]):
    """Restores seq order for one stream whose messages arrive out of order.

    Holds at most `window` - 1 items: a seq at or beyond next + window is a
    window overflow, a seq already delivered or waiting is a duplicate, and
    `finish(end)` refuses any gap left at the end. Each is a ProtocolError.
    """

    def __init__(self, window: int, *, start: int = 0, name: str = "stream") -> None:
        if window < 1:
            raise ConfigError(f"reorder window must be at least 1, got {window}")
        self.window = window
        self.name = name
        self._next = start
        self._waiting: dict[int, T] = {}
        self.max_waiting = 0

    @property
    def next_seq(self) -> int:
        return self._next

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def push(self, seq: int, item: T) -> list[T]:
        """Take one item; return the items that are now in order (possibly none)."""
        if seq < self._next or seq in self._waiting:
            state = f"delivered up to {self._next - 1}" if seq < self._next else "already waiting"
            raise ProtocolError(f"{self.name}: duplicate seq {seq} ({state})",
                                problem="duplicate", stream=self.name)
        if seq >= self._next + self.window:
            raise ProtocolError(f"{self.name}: reorder window overflow: seq {seq} is "
                                f"{seq - self._next} ahead of the next expected {self._next} "
                                f"(window {self.window})", problem="window", stream=self.name)
        if seq != self._next:
            self._waiting[seq] = item
            self.max_waiting = max(self.max_waiting, len(self._waiting))
            return []
        ready = [item]
        self._next += 1
        while self._next in self._waiting:
            ready.append(self._waiting.pop(self._next))
            self._next += 1
        return ready

    def finish(self, end: int) -> None:
        """The stream's last seq was `end` - 1: refuse anything missing or beyond it."""
        beyond = [s for s in self._waiting if s >= end]
        if self._next > end or beyond:
            last = max([self._next - 1, *beyond])
            raise ProtocolError(f"{self.name}: seq {last} is beyond the end ({end} message(s))",
                                problem="window", stream=self.name)
        missing = end - self._next - len(self._waiting)
        if missing:
            raise ProtocolError(f"{self.name}: gap at the end: {missing} message(s) missing, "
                                f"first missing seq {self._next} (end {end})", problem="gap",
                                stream=self.name)
