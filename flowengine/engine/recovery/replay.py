"""Lossless restart of stateless stages: replay buffers, acknowledgements, the data index.

Theory of operation
-------------------
A stage with ``restart: on-failure`` whose operator is stateless (one output
per input: gain, identity, channel_map, a ``module:Attr`` node with
``stateful = False``) and whose inputs are all sticky restarts *losslessly*
(``WorkerSpec.replay``):

* **The data index.** Every worker feeding such a stage stamps each data
  message with its index in the stream (wire key ``oq``;
  ``StreamSender(index_data=True)``), and the stage stamps each output with
  the index of the input it came from (``ReplayStamp``: exactly one output
  per input, else the run fails naming stage and stream). Output *i* of a
  stream is the output of input *i*, whichever generation of the replica
  made it.
* **Acknowledgements.** Each consumer of the stage (``AckReporter``) reports
  on the control channel, every ``ACK_INTERVAL_S`` or every ``every``
  messages, how far it has taken each stream of each replica: the next data
  index it expects, and the streams that ended. "Taken" means the inbox
  delivered it and the worker processed it: it is in the consumer's own
  state, no longer in a queue the death of the replica can lose. The
  coordinator (``AckRelay``) takes the minimum over the consumer stages and
  forwards it to the stage's upstream workers.
* **Replay buffers.** Each upstream worker keeps, per replica of the stage, a
  ``ReplayBuffer``: the messages it sent there (caps, data, eos, copied) that
  are not acknowledged yet, and for each stream the caps in effect before the
  first of them. An acknowledgement drops what it covers.
* **A restart.** The coordinator tells the upstream workers to ``hold`` the
  dead replica (they drop what ZeroMQ still queues for it, keep recording
  what they send it, send it nothing), starts the replacement, then sends
  ``resume``: each upstream re-sends its buffer in the original order with
  the original sequence numbers (a stream's caps first), then goes on. The
  replacement processes it; its consumers drop outputs whose index they
  already have (``protocol.InboxState(indexed=...)``), so each stream goes
  on bit-identical to a run without the failure.
* **Bounds and backpressure.** A buffer holds at most `max_messages` data
  messages and `max_bytes` bytes of them. A stream's caps and eos are not
  counted: they are per-stream state (the caps in effect, the caps changes
  between unacknowledged data, one eos until the stream ended at every
  consumer; and the last acknowledged data, ``unacknowledged``), bounded by
  the streams in flight, and counting them let a buffer with fewer messages
  than open streams fill for good. When it is full, the sender waits for
  acknowledgements in slices, awake to control (counted as blocked time,
  like a full HWM), and fails naming the stages after ``REPLAY_WAIT_S``
  without one. So the HWMs still bound the queues, and the buffer bounds how
  far a sender may run ahead of what the consumers *after* the stage have
  taken: with a buffer smaller than the HWMs in between, the buffer is the
  tighter bound and throughput is paced by acknowledgements.

Everything here is pure bookkeeping (no sockets); ``resume.py`` is the
worker glue and ``restart.py`` the coordinator's.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from flowengine.errors import FlowError
from flowengine.engine.wire.codec import Part

__all__ = ["ReplayBuffer", "ReplayStamp", "AckReporter", "AckRelay", "Forget", "ACK_INTERVAL_S",
           "REPLAY_WAIT_S", "DEFAULT_REPLAY_MESSAGES", "DEFAULT_REPLAY_BYTES"]

ACK_INTERVAL_S = 0.02
REPLAY_WAIT_S = 30.0
DEFAULT_REPLAY_MESSAGES = 1024
DEFAULT_REPLAY_BYTES = 64 * 1024 * 1024


@dataclass
class _Entry:
    kind: str                 # caps | data | eos
    index: int                # data: its index; caps/eos: the index of the next data
    parts: list[bytes]
    nbytes: int


@dataclass
class _StreamLog:
    entries: deque = field(default_factory=deque)
    caps: _Entry | None = None   # the caps in effect before entries[0], once it was trimmed
    last_data: _Entry | None = None   # the last data acknowledged (see unacknowledged)
    next_index: int = 0


class ReplayBuffer:
    """What one sender sent to one downstream replica and was not acknowledged yet.

    `messages` and `nbytes` count the data messages kept, the only ones the bounds limit."""

    def __init__(self, dest: str, max_messages: int, max_bytes: int) -> None:
        self.dest = dest
        self.max_messages, self.max_bytes = max_messages, max_bytes
        self._streams: dict[str, _StreamLog] = {}
        self.messages = self.nbytes = 0

    @property
    def full(self) -> bool:
        return self.messages >= self.max_messages or self.nbytes >= self.max_bytes

    def record(self, kind: str, stream: str, index: int | None, parts: list[Part]) -> None:
        """Keep a copy of one sent message (a node may reuse the array a payload views)."""
        log = self._streams.setdefault(stream, _StreamLog())
        if kind == "data":
            log.next_index = index if index is not None else log.next_index
            index, log.next_index = log.next_index, log.next_index + 1
        else:
            index = log.next_index
        copies = [bytes(part) for part in parts]
        entry = _Entry(kind, index, copies, sum(len(c) for c in copies))
        log.entries.append(entry)
        self._count(entry, +1)

    def acknowledge(self, stream: str, next_index: int) -> None:
        """The consumers have every data message of `stream` before `next_index`."""
        log = self._streams.get(stream)
        if log is None:
            return
        entries = log.entries
        while entries and entries[0].kind != "eos" and entries[0].index < next_index:
            entry = entries.popleft()
            if entry.kind == "caps":     # keep the caps in effect for what follows
                log.caps = entry
            else:
                log.last_data = entry
            self._count(entry, -1)

    def forget(self, stream: str) -> None:
        """`stream` ended at every consumer: nothing of it can be needed again."""
        log = self._streams.pop(stream, None)
        if log is not None:
            for entry in log.entries:
                self._count(entry, -1)

    @property
    def streams(self) -> list[str]:
        """The streams with messages to send again (at least their caps)."""
        return list(self._streams)

    def unacknowledged(self) -> list[list[bytes]]:
        """Every message to send again, stream by stream in the original order, each stream
        opening with its caps: also a stream whose data were all acknowledged, or the
        replacement could not open it when its next data come (its inbox is resumed).
        Such a stream also gets its last acknowledged data again: a stage sends a stream's
        caps and eos on only once it has output, so without it the eos of a stream that
        ended just before the failure would not get past the replacement (the consumers
        drop that output as a duplicate, by its index)."""
        out: list[list[bytes]] = []
        for log in self._streams.values():
            if log.caps is not None and log.last_data is not None and \
                    not any(e.kind == "data" for e in log.entries):
                out += [log.caps.parts, log.last_data.parts]
            elif log.caps is not None and (not log.entries or log.entries[0].kind != "caps"):
                out.append(log.caps.parts)
            out += [entry.parts for entry in log.entries]
        return out

    def _count(self, entry: _Entry, sign: int) -> None:
        if entry.kind == "data":        # caps and eos: per-stream state, not bounded here
            self.messages += sign
            self.nbytes += sign * entry.nbytes


class ReplayStamp:
    """A losslessly restarting stage's side: one output per input, carrying the input's data
    index (``oq``). The same calls as ``routing.OrderStamp``, which the worker uses for an
    ordered stage; nothing is carried on the eos."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._pending: dict[str, list[int]] = {}   # stream -> [input index, outputs given]

    def take(self, stream: str, order: int | None, buffer: Any) -> None:
        if order is None:
            raise FlowError(f"stage {self.stage!r} restarts losslessly but a data message of "
                            f"stream {stream!r} came without its data index ('oq')")
        self._pending[stream] = [order, 0]

    def stamp(self, stream: str, out: Any) -> int:
        pending = self._pending.get(stream)
        if pending is None or pending[1]:
            self._not_one_to_one(stream, "a buffer at the end of the stream" if pending is None
                                 else f"a second buffer for input {pending[0]}")
        pending[1] += 1
        return pending[0]

    def done(self, stream: str) -> None:
        pending = self._pending.pop(stream, None)
        if pending is not None and not pending[1]:
            self._not_one_to_one(stream, f"none for input {pending[0]}")

    def end(self, stream: str, order_end: int | None) -> None:
        """Nothing to carry: consumers know a stream's end from its eos."""

    def order_end(self, stream: str) -> None:
        return None

    def _not_one_to_one(self, stream: str, what: str) -> None:
        raise FlowError(f"stage {self.stage!r} stream {stream!r}: a stage that restarts "
                        f"losslessly needs one output per input, but its operator gave {what} "
                        f"(declare it stateful: it then restarts with a reported gap)")


class AckReporter:
    """A consumer's side: the acknowledgements it owes the stages that restart losslessly.

    `inbox` is the worker's ``protocol.InboxState``; `senders` its indexed senders.
    `due(now)` gives the fields of an ``ack`` control message when one is due, else None.
    It remembers what it last sent for open streams only: an ended stream is reported once
    in ``ended`` and forgotten (control messages are never lost, ``control_outbox.py``), and
    again in ``again`` whenever a replay brings its eos back (``indexed.py``).
    """

    def __init__(self, inbox: Any, senders: list[str], every: int,
                 interval: float = ACK_INTERVAL_S) -> None:
        self.inbox, self.senders = inbox, senders
        self.every, self.interval = max(1, every), interval
        self._sent: dict[str, dict[str, int]] = {s: {} for s in senders}
        self._delivered = self._ended = 0
        self._next = 0.0

    def due(self, now: float) -> dict[str, Any] | None:
        progressed = self.inbox.delivered - self._delivered
        ended = self.inbox.indexed_streams_ended != self._ended
        if progressed < self.every and not ended and (now < self._next or not progressed):
            return None
        self._delivered, self._next = self.inbox.delivered, now + self.interval
        self._ended = self.inbox.indexed_streams_ended
        acks: dict[str, dict[str, int]] = {}
        ended_now: dict[str, list[str]] = {}
        again: dict[str, list[str]] = {}
        for sender in self.senders:
            streams, sent = self.inbox.progress(sender), self._sent[sender]
            changed = {s: n for s, n in streams.items() if sent.get(s) != n}
            if changed:
                acks[sender] = changed
            done = self.inbox.take_ended(sender)
            if done:
                ended_now[sender] = done
            replayed = self.inbox.take_again(sender)
            if replayed:
                again[sender] = replayed
            self._sent[sender] = streams
        if not (acks or ended_now or again):
            return None
        return {"acks": acks, "ended": ended_now, **({"again": again} if again else {})}

    def sizes(self) -> int:
        """Streams it remembers (they must stay bounded by the open ones)."""
        return sum(len(streams) for streams in self._sent.values())


@dataclass
class _Replay:
    """The resume of one generation of a replica: the upstreams that have not reported their
    replay yet, and the streams the replay held."""

    generation: int
    waiting: set[str]
    streams: set[str] = field(default_factory=set)
    unknown: bool = False     # an upstream died before it reported: count every stream in it


@dataclass(frozen=True)
class Forget:
    """Tell the consumers of `replica` that `streams` are forgotten upstream: no generation
    after `generation` replays them, and that one's replay held `replayed` (``indexed.py``)."""

    replica: str
    generation: int
    streams: list[str]
    replayed: list[str]


class AckRelay:
    """The coordinator's side: consumers' acknowledgements -> what each upstream may drop,
    and when the consumers may forget an ended stream (``Forget``, ``indexed.py``).

    `consumers` maps each replica id of a losslessly restarting stage to the names
    of its consumer stages. A stream's acknowledged index is the minimum over
    those stages (one that has not reported it holds it at 0, one where it ended
    no longer counts); it ended when every consumer stage said so, and is then
    forgotten here too: what this keeps is bounded by the streams in flight.
    """

    def __init__(self, consumers: dict[str, list[str]]) -> None:
        self.consumers = consumers
        # (replica, stream) -> {consumer stage: next index, or None once it ended there}
        self._streams: dict[tuple[str, str], dict[str, int | None]] = {}
        self._replays: dict[str, _Replay] = {}          # replica -> its newest resume
        self._deferred: dict[str, list[str]] = {}       # replica -> ended, replay not known
        self._forgets: list[Forget] = []

    def report(self, stage: str, message: dict[str, Any]
               ) -> dict[str, tuple[dict[str, int], list[str]]]:
        """Take one consumer's ``ack``; per replica it concerns, the (acks, ended) to forward.
        Send those before anything later (a ``resume``) to the same upstreams."""
        out: dict[str, tuple[dict[str, int], list[str]]] = {}
        for replica, streams in message.get("acks", {}).items():
            if replica in self.consumers:
                for stream, index in streams.items():
                    self._progress(out, replica, stream, stage, index)
        for replica, streams in message.get("ended", {}).items():
            if replica in self.consumers:
                for stream in streams:
                    self._progress(out, replica, stream, stage, None)
        for replica, streams in message.get("again", {}).items():
            for stream in streams:
                # Known here: it has not ended at every consumer yet, its end goes out then.
                # Not known: it had, the upstreams were told, and yet a replay brought it
                # again (it came back into a buffer): tell them again (``indexed.py``).
                if replica in self.consumers and (replica, stream) not in self._streams:
                    out.setdefault(replica, ({}, []))[1].append(stream)
        return out

    def resumed(self, replica: str, generation: int, upstreams: list[str]) -> None:
        """The coordinator is about to send ``resume`` for `generation` of `replica`."""
        if replica not in self.consumers:
            return
        last = self._replays.get(replica)
        if last is not None and last.waiting:
            # Ended before this resume, so not in its replay; the last one's is not known.
            self._release(replica, replayed_all=True)
        # Only the newest resume matters from now on: the consumers retire older generations
        # once they see this one, and reports name their generation (no guessing by order).
        self._replays[replica] = _Replay(generation, set(upstreams))

    def replayed(self, replica: str, upstream: str, generation: int,
                 streams: list[str]) -> None:
        """`upstream` re-sent `streams` to `generation` of `replica`. A report for another
        generation (an older resume answered late, or one from a killed upstream read after
        ``upstream_replaced``) says nothing about the newest replay: ignored."""
        replay = self._replays.get(replica)
        if replay is None or replay.generation != generation or upstream not in replay.waiting:
            return
        replay.waiting.discard(upstream)
        replay.streams.update(streams)
        if not replay.waiting:
            self._release(replica)

    def upstream_replaced(self, upstream: str) -> None:
        """`upstream` died: it will not report the replay it owes."""
        for replica, replay in self._replays.items():
            if upstream in replay.waiting:
                replay.waiting.discard(upstream)
                replay.unknown = True
                if not replay.waiting:
                    self._release(replica)

    def take_forgets(self) -> list[Forget]:
        forgets, self._forgets = self._forgets, []
        return forgets

    def sizes(self) -> dict[str, int]:
        return {"streams": len(self._streams),
                "deferred": sum(len(s) for s in self._deferred.values())}

    def _progress(self, out: dict, replica: str, stream: str, stage: str,
                  index: int | None) -> None:
        stages = self.consumers[replica]
        seen = self._streams.setdefault((replica, stream), {})
        seen[stage] = index
        if all(seen.get(s, 0) is None for s in stages):
            del self._streams[(replica, stream)]
            out.setdefault(replica, ({}, []))[1].append(stream)
            self._deferred.setdefault(replica, []).append(stream)
            replay = self._replays.get(replica)
            if replay is None or not replay.waiting:
                self._release(replica)
            return
        low = min(seen.get(s, 0) for s in stages if seen.get(s, 0) is not None)
        if low:
            out.setdefault(replica, ({}, []))[0][stream] = low

    def _release(self, replica: str, replayed_all: bool = False) -> None:
        """Forget what ended at every consumer, now that the newest replay is known
        (`replayed_all`: it is not, so count every stream as in it)."""
        streams = self._deferred.pop(replica, [])
        if not streams:
            return
        replay = self._replays.get(replica)
        if replay is None:               # never resumed: no replay holds anything
            self._forgets.append(Forget(replica, 0, streams, []))
            return
        replayed = streams if replayed_all or replay.unknown else \
            [s for s in streams if s in replay.streams]
        self._forgets.append(Forget(replica, replay.generation, streams, replayed))
