"""The upstream side of a restart: what a worker sends to a replacement downstream replica.

When the coordinator has started a replacement for replica "enc:1" and seen
it ready, it sends ``resume`` (to: "enc:1") to every worker feeding that
replica. Each of them, at its next safe point (between two buffers, never in
the middle of sending one, so sequence numbers stay in order on every edge),
sends the current caps of every open stream that sticks to that replica, so
the replacement can open them in the middle (its ``InboxState`` is
``resumed``), and its eof again if it had already ended its run. The caps
take the stream's next sequence number, so they go out on every sticky edge
that carries the stream: a receiver that did not need them sees an
unchanged caps, which changes nothing.

A replica of a stage that restarts losslessly (``replay.py``) is resumed by
``ReplaySender`` instead: the sender re-sends what it kept of that replica's
streams, unacknowledged, with the original sequence numbers.
"""

from __future__ import annotations

import time
from typing import Any

from flowengine.errors import FlowError
from flowengine.engine.recovery.replay import REPLAY_WAIT_S, ReplayBuffer
from flowengine.engine.worker.routing import StickyRouter
from flowengine.engine.wire.codec import Part, encode_eof

__all__ = ["resume_downstream", "ReplaySender"]

_SLICE_MS = 100


def resume_downstream(worker: Any, target: str, generation: int) -> None:
    """Caps of `worker`'s open streams routed to replica `target` ("stage:replica"), generation
    `generation`, then its eof when it was sent before; `worker` is a ``worker.Worker``.
    Then ``resumed`` tells the coordinator how many messages had gone to that replica
    before: only later ones can be in the replacement's queue."""
    if worker.replay is not None and target in worker.replay.buffers:
        worker.replay.resume(target, generation)
        return
    sent_before = worker.send.sent_to.get(target, 0)
    streams: list[str] = []
    destination = None
    for sockets, router in zip(worker.edges, worker.routers):
        for replica, (dest, sock) in enumerate(sockets):
            if dest != target:
                continue
            destination = (dest, sock)
            if isinstance(router, StickyRouter):
                streams += [s for s in worker.sender.open_streams
                            if router.replica(s) == replica and s in worker.out_caps
                            and s not in streams]
    if destination is None:
        return
    for stream in streams:
        worker._send_stream(stream, worker.sender.caps(stream, worker.out_caps[stream]))
    if worker.sender.eof_sent:
        worker._send(*destination, encode_eof(worker.sender.sender))
    flush = getattr(worker, "_flush_all", None)
    if flush is not None:
        flush()
    worker._tell("resumed", to=target, generation=generation, sent=sent_before)


class ReplaySender:
    """A worker's replay buffers, one per downstream replica that restarts losslessly, and
    what it does on ``ack``, ``hold`` and ``resume`` for them (``replay.py``)."""

    def __init__(self, worker: Any, dests: list[str], max_messages: int,
                 max_bytes: int) -> None:
        self.worker = worker
        self.buffers = {dest: ReplayBuffer(dest, max_messages, max_bytes) for dest in dests}
        # dest -> (output edge index, replica, OutputEdge, endpoint)
        self.places = {dest: (i, replica, edge, endpoint)
                       for i, (edge, sockets) in enumerate(zip(worker.spec.outputs, worker.edges))
                       for replica, ((dest, _), endpoint) in enumerate(zip(sockets,
                                                                           edge.endpoints))}
        self.held: set[str] = set()
        # dest -> the generation of its newest hold: a resume of an older one is outdated
        self.holds: dict[str, int] = {}
        self.replayed = 0              # messages sent again, over the run
        self._replaying = False

    def on_send(self, dest: str, parts: list[Part]) -> bool:
        """Keep a message `worker.sender` just built for `dest`, waiting for room in the
        buffer first; False when it must not go out now (`dest` is held)."""
        buffer = self.buffers.get(dest)
        if buffer is None:
            return True
        if self._replaying:             # the replay may itself be cut short by a new hold
            return dest not in self.held
        kind, stream, index = self.worker.sender.last
        if kind in ("caps", "data", "eos"):
            if kind == "data" and buffer.full:
                self._wait_for_room(buffer)
            buffer.record(kind, stream, index, parts)
        return dest not in self.held

    def acknowledge(self, message: dict[str, Any]) -> None:
        """The coordinator forwarded how far the consumers of replica ``to`` have got."""
        buffer = self.buffers.get(message["to"])
        if buffer is None:
            return
        for stream, index in message.get("acks", {}).items():
            buffer.acknowledge(stream, index)
        for stream in message.get("ended", []):
            buffer.forget(stream)

    def hold(self, dest: str, generation: int) -> None:
        """Replica `dest` died and `generation` will replace it: drop what waits for it here
        and in ZeroMQ (a new socket; a disconnect would still deliver the old queue to the
        replacement, after the replay), and send it nothing until the ``resume`` of
        `generation`. A resume still queued here names a generation that is gone: dropped
        (replaying it into the new socket, then again at the new resume, would duplicate)."""
        worker = self.worker
        self.held.add(dest)
        self.holds[dest] = max(generation, self.holds.get(dest, 0))
        worker.resume_to[:] = [(d, g) for d, g in worker.resume_to if d != dest]
        outbox = worker.outboxes[dest]
        if len(outbox):
            outbox.take()               # all of it is in the replay buffer
        index, replica, edge, endpoint = self.places[dest]
        old, new = outbox.socket, worker.connect_push(edge, endpoint)
        old.close(linger=0)
        outbox.socket = new
        worker.edges[index][replica] = (dest, new)
        worker.send.sockets_changed()
        worker.sockets[worker.sockets.index(old)] = new
        worker._tell("held", to=dest)

    def resume(self, dest: str, generation: int) -> None:
        """Send replica `dest` (a replacement, `generation`) everything not acknowledged, then
        eof if the run's end was sent, and tell the coordinator how much (``replayed``) and
        how many messages had gone to `dest` before (``resumed``). Nothing for an outdated
        resume: a newer hold of `dest` came since (its generation died too)."""
        if generation < self.holds.get(dest, 0):
            return
        sent_before = self.worker.send.sent_to.get(dest, 0)
        self.held.discard(dest)
        buffer = self.buffers[dest]
        messages, streams = buffer.unacknowledged(), buffer.streams
        sock = self.worker.outboxes[dest].socket
        self._replaying = True
        try:
            for parts in messages:
                self.worker._send(dest, sock, parts)
            if self.worker.sender.eof_sent:
                self.worker._send(dest, sock, encode_eof(self.worker.sender.sender))
        finally:
            self._replaying = False
        self.replayed += len(messages)
        self.worker._flush_all()
        self.worker._tell("replayed", to=dest, generation=generation, messages=len(messages),
                          streams=len(streams), names=streams)
        self.worker._tell("resumed", to=dest, generation=generation, sent=sent_before)

    def _wait_for_room(self, buffer: ReplayBuffer) -> None:
        """Backpressure: wait, awake to control, until acknowledgements make room; a replay
        for a held replica happens here too (this very message goes out after it)."""
        worker = self.worker
        deadline = time.monotonic() + REPLAY_WAIT_S
        while buffer.full:
            left = buffer.messages
            if buffer.dest not in self.held:
                worker._flush_all()     # what the consumers must see before they acknowledge
            waited = time.perf_counter()
            worker.control.poll(_SLICE_MS)
            worker.blocked += time.perf_counter() - waited
            worker.service()
            resumed = [r for r in worker.resume_to if r[0] in self.buffers]
            for dest, generation in resumed:
                worker.resume_to.remove((dest, generation))
                self.resume(dest, generation)
            if buffer.messages < left or resumed or buffer.dest in self.held:
                # progress, or a replacement still starting / just fed: its own full budget
                deadline = time.monotonic() + REPLAY_WAIT_S
            elif time.monotonic() >= deadline:
                raise FlowError(
                    f"stage {worker.spec.stage!r} replica {worker.spec.replica}: replay buffer "
                    f"for {buffer.dest!r} full ({buffer.messages} messages, {buffer.nbytes} "
                    f"bytes; limits {buffer.max_messages}, {buffer.max_bytes}) and no "
                    f"acknowledgement from the stages after it for {REPLAY_WAIT_S:.0f} s")
