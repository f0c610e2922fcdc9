"""A worker's way out: routing each message, batching it, and sending without blocking.

Theory of operation
-------------------
Per output edge the worker holds one connected PUSH per downstream replica
and a router (``routing.py``) that says which replica a message goes to:
sticky (one stream, one replica, in order) or, into an ``ordered`` stage,
balanced over the replicas with room. A stream's first output (and any
later change of format or codec) sends caps first; its end sends eos.

What goes to one socket waits in its ``Outbox`` and leaves as one batch when
the batch is full or when ``flush_all`` is called (the worker is about to
wait). A send never blocks for good: ``NOBLOCK``, and when a downstream
queue is full the send path flushes what can go elsewhere, then asks the
worker for one bounded slice of waiting (``wait``: awake to control, counted
as blocked), and tries again. A replica that restarts losslessly has its
messages recorded first (``resume.ReplaySender``); while it is held they
are only recorded.

Rules kept: never block on a full replica while another output has room;
every wait is one bounded slice taken by the worker; per message, no more
work than the routing, the encoding and one outbox append.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zmq

from flowengine.audio.buffers import AudioFrame, Packet
from flowengine.engine.worker.outbox import Outbox, batching
from flowengine.engine.worker.readiness import writable
from flowengine.engine.wire.protocol import StreamSender
from flowengine.engine.worker.routing import BALANCED, BalancedRouter, StickyRouter, router_for
from flowengine.engine.wire.codec import Caps, Part, message_nbytes

__all__ = ["SendPath"]

# Plain ints: ZeroMQ's flag enums cost microseconds per operation in a loop run per message.
_NOBLOCK, _NOBLOCK_MORE = int(zmq.NOBLOCK), int(zmq.NOBLOCK | zmq.SNDMORE)

Edge = list[tuple[str, zmq.Socket]]   # per downstream replica: (its sender id, our PUSH)


class SendPath:
    """The output edges of one worker: their routers, outboxes and what they sent.

    `wait(sockets)` is the worker's one bounded slice of waiting for room on `sockets`,
    awake to control. (What a stage gives is counted by its loop, per batch.)
    """

    def __init__(self, outputs: list[Any], edges: list[Edge], worker_id: str,
                 sender: StreamSender, stamp: Any,
                 wait: Callable[[list[zmq.Socket]], None], live: bool = False) -> None:
        self.edges = edges
        self.sender = sender
        self.stamp = stamp          # routing.OrderStamp / replay.ReplayStamp, or None
        self._wait = wait
        self.replay: Any = None     # resume.ReplaySender, set once the worker has one
        # Per downstream replica, what waits to go out as one batch. Into an ordered stage
        # one message at a time: its replicas are chosen by room for one message. `live`:
        # the worker's streams are all live (outbox.batching).
        self.outboxes: dict[str, Outbox] = {
            dest: Outbox(dest, push, max_messages=1 if edge.routing == BALANCED else
                         batching(edge.hwm, live)[0])
            for edge, sockets in zip(outputs, edges) for dest, push in sockets}
        # Per output edge, how its messages are spread over the downstream replicas.
        self.routers = [router_for(edge.routing, worker_id, len(sockets),
                                   lambda replica, sockets=sockets: writable(sockets[replica][1]))
                        for edge, sockets in zip(outputs, edges)]
        self.balanced = any(isinstance(router, BalancedRouter) for router in self.routers)
        self.out_caps: dict[str, Caps] = {}
        self._sticky: dict[str, Edge] = {}      # per open stream: its sticky (dest, socket)s
        self.sent_to: dict[str, int] = {}       # messages handed to ZeroMQ per downstream replica
        self.bytes_out = 0                      # data messages' bytes, for the stats

    # ------------------------------------------------------------------ sending

    def send(self, dest: str, sock: zmq.Socket, parts: list[Part],
             nbytes: int | None = None) -> None:
        """Queue one message (of `nbytes` bytes) for `dest`; its batch goes out when full (or
        at the next flush)."""
        if self.replay is not None and not self.replay.on_send(dest, parts):
            return                  # kept for a replacement of `dest` (resume.ReplaySender)
        outbox = self.outboxes[dest]
        if outbox.add(parts, message_nbytes(parts) if nbytes is None else nbytes):
            self._flush(outbox)

    def _flush(self, outbox: Outbox) -> None:
        """Send `outbox` as one batch without ever blocking for good: wait for room in slices,
        servicing control, and let the other outboxes go meanwhile when their sockets have
        room (a stage waiting on one output never holds back another)."""
        count = len(outbox.messages)
        parts, copy = outbox.take()
        sock = outbox.socket
        last = len(parts) - 1
        while True:
            try:
                # send_multipart's part by part, without its flag enums: ZeroMQ takes every
                # part of a message once it took the first one (the HWM counts messages).
                for part in parts[:last]:
                    sock.send(part, _NOBLOCK_MORE, copy=copy)
                sock.send(parts[last], _NOBLOCK, copy=copy)
                # Counted once ZeroMQ has them: the queue depth downstream is what is there.
                self.sent_to[outbox.dest] = self.sent_to.get(outbox.dest, 0) + count
                return
            except zmq.Again:
                pass
            self.wait_for_room([sock])
            if self.replay is not None and outbox.dest in self.replay.held:
                return              # its replica died: these are in the replay buffer

    def wait_for_room(self, sockets: list[zmq.Socket]) -> None:
        """One slice of waiting for room on `sockets` (backpressure): batches that can go
        elsewhere go first."""
        self.flush_ready()
        self._wait(sockets)

    def flush_ready(self) -> None:
        """Send every waiting batch whose socket has room now; never waits."""
        for outbox in self.outboxes.values():
            if outbox.messages and writable(outbox.socket):
                self._flush(outbox)

    def flush_all(self) -> None:
        """Send every waiting batch (before the worker waits for input or control)."""
        for outbox in self.outboxes.values():
            if outbox.messages:
                self._flush(outbox)

    def send_stream(self, stream: str, parts: list[Part], nbytes: int | None = None) -> None:
        """One message of `stream` to the replica its stream sticks to, on every sticky edge
        (where that is, asked once per stream: it sticks until the stream ends)."""
        sticky = self._sticky.get(stream)
        if sticky is None:
            sticky = self._sticky[stream] = [
                sockets[router.replica(stream)] for sockets, router in zip(self.edges, self.routers)
                if isinstance(router, StickyRouter)]
        for dest, sock in sticky:
            self.send(dest, sock, parts, nbytes)

    def sockets_changed(self) -> None:
        """A downstream replica's socket was replaced (a restart): where streams stick is
        asked again."""
        self._sticky.clear()

    def _send_to_every_replica(self, parts_for: Any) -> None:
        """Caps or eos on every balanced edge: `parts_for(router)` gives (replica, parts)."""
        for sockets, router in zip(self.edges, self.routers):
            if isinstance(router, BalancedRouter):
                for replica, parts in parts_for(router):
                    dest, sock = sockets[replica]
                    self.send(dest, sock, parts)

    def _send_balanced_data(self, buf: AudioFrame | Packet) -> None:
        """One data message on every balanced edge, to a replica with room."""
        for sockets, router in zip(self.edges, self.routers):
            if isinstance(router, BalancedRouter):
                replica = self._replica_with_room(sockets, router)
                dest, sock = sockets[replica]
                self.send(dest, sock, router.data(replica, buf))

    def _replica_with_room(self, sockets: Edge, router: BalancedRouter) -> int:
        """The router's pick among the replicas whose queue has room; wait (awake) if none has."""
        while True:
            choice = router.choose([writable(sock) for _, sock in sockets])
            if choice is not None:
                return choice
            self.wait_for_room([sock for _, sock in sockets])

    def send_eof(self) -> None:
        """The run's end to every downstream replica, and every waiting batch out."""
        eof = self.sender.eof()
        for sockets in self.edges:
            for dest, sock in sockets:
                self.send(dest, sock, eof)
        self.flush_all()

    # ------------------------------------------------------------------ streams

    def emit(self, stream: str, buf: Any) -> None:
        """Send one output buffer of `stream`, preceded by caps when they are new or changed."""
        caps = self.out_caps.get(stream)
        if caps is None or not caps.describes(buf):
            caps = Caps.for_frame(buf) if type(buf) is AudioFrame else Caps.for_packet(buf)
            self.out_caps[stream] = caps
            self.send_stream(stream, self.sender.caps(stream, caps))
            self._send_to_every_replica(lambda router: router.caps(stream, caps))
        # An ordered stage's output keeps its input's place in the stream (oq, pts).
        order = self.stamp.stamp(stream, buf) if self.stamp is not None else None
        parts = self.sender.data(buf, order=order)
        nbytes = self.sender.last_nbytes
        self.send_stream(stream, parts, nbytes)
        if self.balanced:
            self._send_balanced_data(buf)
        self.bytes_out += nbytes

    def end_stream(self, stream: str, aborted: bool = False) -> None:
        """Eos of `stream` wherever its caps went; its sticky replicas are free again.
        `aborted`: the stream was cut short after an error (the eos says so)."""
        order_end = self.stamp.order_end(stream) if self.stamp is not None else None
        if stream in self.out_caps:
            del self.out_caps[stream]
            self.send_stream(stream, self.sender.eos(stream, order_end=order_end,
                                                     aborted=aborted))
            self._send_to_every_replica(lambda router: router.eos(stream, aborted))
            for router in self.routers:
                if isinstance(router, StickyRouter):
                    router.forget(stream)
            self._sticky.pop(stream, None)

    # ----------------------------------------------- a multi-stream source's room

    def stream_has_room(self, stream: str) -> bool:
        """Whether the sticky replicas `stream` goes to (or would) have room for it."""
        return all(router.has_room_for(stream) for router in self.routers
                   if isinstance(router, StickyRouter))

    def wait_for_full_replicas(self) -> bool:
        """No stream of the source had room: wait (one bounded slice) for room on the full
        replicas. False when none is full (the source itself had nothing yet)."""
        full = [sock for sockets in self.edges for _, sock in sockets if not writable(sock)]
        if full:
            self.wait_for_room(full)
        return bool(full)
