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
  ``ReplayBuffer``: the frames it sent there (caps, data, eos, copied) that
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
  consumer), bounded by the streams in flight, and counting them let a
  buffer with fewer messages than open streams fill for good. When it is full, the sender waits for
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

from ..errors import FlowError
from .wire import Frame

__all__ = ["ReplayBuffer", "ReplayStamp", "AckReporter", "AckRelay", "ACK_INTERVAL_S",
           "REPLAY_WAIT_S", "DEFAULT_REPLAY_MESSAGES", "DEFAULT_REPLAY_BYTES"]

ACK_INTERVAL_S = 0.02
REPLAY_WAIT_S = 30.0
DEFAULT_REPLAY_MESSAGES = 1024
DEFAULT_REPLAY_BYTES = 64 * 1024 * 1024


@dataclass
class _Entry:
    kind: str                 # caps | data | eos
    index: int                # data: its index; caps/eos: the index of the next data
    frames: list[bytes]
    nbytes: int


@dataclass
class _StreamLog:
    entries: deque = field(default_factory=deque)
    caps: _Entry | None = None   # the caps in effect before entries[0], once it was trimmed
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

    def record(self, kind: str, stream: str, index: int | None, frames: list[Frame]) -> None:
        """Keep a copy of one sent message (a node may reuse the array a payload views)."""
        log = self._streams.setdefault(stream, _StreamLog())
        if kind == "data":
            log.next_index = index if index is not None else log.next_index
            index, log.next_index = log.next_index, log.next_index + 1
        else:
            index = log.next_index
        copies = [bytes(frame) for frame in frames]
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
        replacement could not open it when its next data come (its inbox is resumed)."""
        out: list[list[bytes]] = []
        for log in self._streams.values():
            if log.caps is not None and (not log.entries or log.entries[0].kind != "caps"):
                out.append(log.caps.frames)
            out += [entry.frames for entry in log.entries]
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
    """

    def __init__(self, inbox: Any, senders: list[str], every: int,
                 interval: float = ACK_INTERVAL_S) -> None:
        self.inbox, self.senders = inbox, senders
        self.every, self.interval = max(1, every), interval
        self._sent: dict[str, tuple[dict[str, int], set[str]]] = {s: ({}, set()) for s in senders}
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
        ended: dict[str, list[str]] = {}
        for sender in self.senders:
            streams, done = self.inbox.progress(sender)
            sent_streams, sent_done = self._sent[sender]
            changed = {s: n for s, n in streams.items() if sent_streams.get(s) != n}
            new_done = sorted(done - sent_done)
            if changed:
                acks[sender] = changed
            if new_done:
                ended[sender] = new_done
            self._sent[sender] = (streams, done)
        return {"acks": acks, "ended": ended} if acks or ended else None


class AckRelay:
    """The coordinator's side: consumers' acknowledgements -> what each upstream may drop.

    `consumers` maps each replica id of a losslessly restarting stage to the names
    of its consumer stages. A stream's acknowledged index is the minimum over
    those stages (one that has not reported it holds it at 0); it ended when
    every consumer stage said so.
    """

    def __init__(self, consumers: dict[str, list[str]]) -> None:
        self.consumers = consumers
        self._acks: dict[tuple[str, str, str], int] = {}     # (replica, stream, stage) -> index
        self._ended: dict[tuple[str, str], set[str]] = {}    # (replica, stream) -> stages

    def report(self, stage: str, message: dict[str, Any]
               ) -> dict[str, tuple[dict[str, int], list[str]]]:
        """Take one consumer's ``ack``; per replica it concerns, the (acks, ended) to forward."""
        out: dict[str, tuple[dict[str, int], list[str]]] = {}
        for replica, streams in message.get("acks", {}).items():
            stages = self.consumers.get(replica)
            if stages is None:
                continue
            for stream, index in streams.items():
                self._acks[(replica, stream, stage)] = index
                low = min(self._acks.get((replica, stream, s), 0) for s in stages)
                if low:
                    out.setdefault(replica, ({}, []))[0][stream] = low
        for replica, streams in message.get("ended", {}).items():
            stages = self.consumers.get(replica)
            if stages is None:
                continue
            for stream in streams:
                done = self._ended.setdefault((replica, stream), set())
                done.add(stage)
                if done >= set(stages):
                    out.setdefault(replica, ({}, []))[1].append(stream)
                    for s in stages:
                        self._acks.pop((replica, stream, s), None)
        return out
