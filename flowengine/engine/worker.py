"""One worker process: one replica of one stage, between ZeroMQ sockets and its nodes.

Theory of operation
-------------------
Sockets: a DEALER to the coordinator's ROUTER (identity "stage:replica"), a
bound PULL inbox (RCVHWM = the stage's hwm) unless the stage is a source,
and one connected PUSH per downstream replica (SNDHWM = that stage's hwm),
so this worker chooses where each message goes (``routing``): sticky (a
new stream goes to the replica with the fewest open streams; by
``crc32(stream id)`` out of an ordered or restarting stage) so one stream
always takes one path and stays in order, or, into an ``ordered`` stage,
balanced over the replicas with room, each data message stamped with its
place in the stream so the stage after can merge the parts back in order. With ``security.curve`` the inbox is a CURVE
server behind a ZAP handler and every other socket a CURVE client
(``security.py``).

Streams: a node per stream, made when the stream's caps arrive; each data
message is pushed into it and whatever it gives is sent on. The first output
of a stream (and any later change of format or codec) sends caps first. An
eos flushes the stream's node (``push(None)``, pull to EOF), sends eos on,
and drops the node. A source is one node whose buffers may belong to several
streams; a multi-stream source reports each stream's end as it happens
(``take_ended_streams``) and that stream's eos goes out at once, so its files
close early; before sticky replicas it gives buffers of streams whose replica
has room (``pull_ready``), waiting only when none has; when the source ends
(or the coordinator says ``drain``) every open stream gets its eos.

Fan-in (``fanin.py``): an ordinary stage fed by several stages refuses a
stream id that comes from two of them; a multi-input stage (a mixer) has one
node for every input, keyed by (upstream stage, stream id), whose output is
its own stream.

The run ends when EOF came from every upstream sender (``InboxState``): send
EOF to every downstream replica, report ``done`` with the final counts, then
keep every socket open until the coordinator's ``shutdown`` (bounded) — a
socket closed right after its last send can lose what is still queued, so
delivery never relies on linger; linger only bounds the exit.

Batches (``outbox.py``): what goes to one downstream socket is queued and
sent as one ZeroMQ message when the queue is full, when the inbox is empty,
when a source has nothing ready (or after every buffer of a paced source),
and before any wait; a live stream's buffer therefore leaves at once while
an offline run moves batches. The inbox takes batches or single messages.

Never blocked for good: sends are non-blocking; when a downstream queue is
full (backpressure) the worker polls for room in short slices while it keeps
answering control messages and sending stats, so a stuck downstream shows as
time blocked on send, not as a hang. Stats go out about once a second and are
the coordinator's heartbeat. Any exception is reported as ``error`` with its
traceback before the process exits non-zero.
"""

from __future__ import annotations

import contextlib
import cProfile
import gc
import math
import multiprocessing
import os
import signal
import sys
import time
import traceback
from typing import Any

import zmq

from ..buffers import AudioFrame, Packet
from ..errors import CodecError, FlowError, WireError
from ..node import AGAIN, EOF, Node
from ..nodes.basic import pull_outputs
from ..nodes.streams import take_ended_streams
from ..pacing import waiting_with
from .control import encode_control, decode_control, COORDINATOR_MESSAGES
from .audit import clock_samples, count_buffer, new_stream_counts
from .fanin import MultiInputFeed, StreamOrigins
from .stagenode import create_stage_node
from .plan import WorkerSpec, sender_id
from .preload import warm
from .protocol import InboxState, RunEnd, SenderEnd, StreamCaps, StreamData, StreamEnd, \
    StreamSender
from .replay import AckReporter, ReplayStamp
from .resume import ReplaySender, resume_downstream
from .routing import BALANCED, BalancedRouter, OrderedMerge, OrderStamp, StickyRouter, \
    router_for
from .security import curve_client, curve_server, start_authenticator
from .outbox import Outbox, batching
from .wire import Caps, Frame, decode_batch, message_nbytes

__all__ = ["run_worker", "Worker", "LINGER_MS", "SHUTDOWN_WAIT_SECONDS", "PROFILE_ENV"]

LINGER_MS = 1000
SHUTDOWN_WAIT_SECONDS = 30.0
START_WAIT_SECONDS = 60.0
_POLL_MS = 100
_IDLE_WAIT_S = 0.1         # longest wait on the sockets (a live mixer's clock ticks that often)
_AGAIN_WAIT_S = 0.005      # a source with nothing ready (and no due time) is asked again after
_CONTROL_EVERY_S = 0.01    # a busy source looks at the control socket this often
_RECONNECT_MS, _RECONNECT_MAX_MS = 5, 100   # a PUSH's retries to connect to an inbox
# Plain ints: ZeroMQ's flag enums cost microseconds per operation in a loop run per message.
_EVENTS, _POLLIN, _POLLOUT = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.POLLOUT)
_NOBLOCK = int(zmq.NOBLOCK)
# Set to a directory, every worker writes a cProfile of its run to DIR/<stage>-<replica>.prof
# (read with pstats; waits show as poll): how the engine's own costs were found and cut
# (docs/performance.md).
PROFILE_ENV = "FLOWENGINE_PROFILE_DIR"


class _Shutdown(Exception):
    """The coordinator ended the run (normally or because of a failure elsewhere)."""


def _seconds(buf: AudioFrame | Packet) -> float:
    if type(buf) is AudioFrame:
        return buf.samples / buf.format.sample_rate
    if not buf.duration:
        return 0.0
    # int / int is correctly rounded, as float(Fraction) is: the same value, no Fraction.
    return buf.duration * buf.time_base_num / buf.time_base_den


def _samples(buf: AudioFrame | Packet) -> int:
    """Samples per channel; a packet's duration when its time base is 1/sample rate."""
    if type(buf) is AudioFrame:
        return buf.samples
    return clock_samples(buf) or 0


def _rate_of(node: Node) -> int | None:
    """The sample rate a node's packets count at (their time base may be a container's)."""
    fmt = getattr(node, "output_format", None)
    return getattr(fmt, "sample_rate", None)


class _Counts:
    """Messages, samples, bytes and seconds of audio in one direction."""

    __slots__ = ("messages", "samples", "bytes", "seconds")

    def __init__(self) -> None:
        self.messages = self.samples = self.bytes = 0
        self.seconds = 0.0

    def add(self, buf: AudioFrame | Packet, nbytes: int) -> None:
        self.messages += 1
        self.samples += _samples(buf)
        self.bytes += nbytes
        self.seconds += _seconds(buf)

    def as_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "samples": self.samples, "bytes": self.bytes,
                "seconds": self.seconds}


class Worker:
    """The sockets, nodes and counters of one worker; `run()` is the whole life of the process."""

    def __init__(self, spec: WorkerSpec, context: zmq.Context, control: zmq.Socket) -> None:
        self.spec = spec
        self.id = spec.id
        self.context = context
        self.control = control
        self.inbox: zmq.Socket | None = None
        if spec.inbox_endpoint is not None:
            self.inbox = _socket(context, zmq.PULL)
            # An ordered stage's senders send one message at a time (outbox.py).
            self.inbox.setsockopt(zmq.RCVHWM, spec.inbox_hwm if spec.ordered
                                  else batching(spec.inbox_hwm)[1])
            if spec.curve is not None:
                curve_server(self.inbox, spec.curve)
            self.inbox.bind(spec.inbox_endpoint)
        # Per output edge: its PUSH sockets (one per downstream replica) and their ids.
        self.edges: list[list[tuple[str, zmq.Socket]]] = []
        for edge in spec.outputs:
            sockets = [(sender_id(edge.stage, replica), self.connect_push(edge, endpoint))
                       for replica, endpoint in enumerate(edge.endpoints)]
            self.edges.append(sockets)
        self.sockets = [self.control] + ([self.inbox] if self.inbox else []) + \
            [push for sockets in self.edges for _, push in sockets]
        # Per downstream replica, what waits to go out as one batch. Into an ordered stage
        # one message at a time: its replicas are chosen by room for one message.
        self.outboxes: dict[str, Outbox] = {
            dest: Outbox(dest, push, max_messages=1 if edge.routing == BALANCED else
                         batching(edge.hwm)[0])
            for edge, sockets in zip(spec.outputs, self.edges) for dest, push in sockets}
        # Built once: Socket.poll() builds a Poller on every call.
        self._control_poller = zmq.Poller()
        self._control_poller.register(self.control, zmq.POLLIN)

        # A replacement worker sends as "stage:replica@N" (protocol.InboxState, Restart).
        self.sender = StreamSender(spec.wire_id, index_data=bool(spec.replay_to))
        self.resume_to: list[str] = []   # replacement replicas waiting for our caps
        # Per output edge, how its messages are spread over the downstream replicas.
        self.routers = [router_for(edge.routing, self.id, len(sockets),
                                   lambda replica, sockets=sockets: _writable(sockets[replica][1]))
                        for edge, sockets in zip(spec.outputs, self.edges)]
        self.balanced = any(isinstance(router, BalancedRouter) for router in self.routers)
        # A multi-stream source before sticky replicas picks streams whose replica has room.
        self.picks_streams = spec.inbox_endpoint is None and any(
            isinstance(r, StickyRouter) and r.replicas > 1 for r in self.routers)
        self.stamp = OrderStamp(spec.stage) if spec.ordered else \
            ReplayStamp(spec.stage) if spec.replay else None
        merged_stages = sorted({s.rpartition(":")[0] for s in spec.merge_senders})
        self.merge = OrderedMerge(spec.merge_senders, spec.reorder_window,
                                  stage=", ".join(merged_stages)) if spec.merge_senders else None
        self.inbox_state = InboxState(spec.upstream, resumed=spec.generation > 0,
                                      indexed=spec.indexed_senders) if spec.upstream else None
        # Lossless restarts (replay.py): buffers for the replicas after us that have them, and
        # the acknowledgements we owe the ones before us.
        self.replay = ReplaySender(self, spec.replay_to, spec.replay_messages,
                                   spec.replay_bytes) if spec.replay_to else None
        self.acks = AckReporter(self.inbox_state, spec.indexed_senders, spec.ack_every) \
            if spec.indexed_senders else None
        # Fan-in: a stream id from one upstream stage only; a mixer's one node takes them all.
        self.origins = StreamOrigins(spec.stage, spec.upstream)
        self.multi = MultiInputFeed(self._new_node(), spec.upstream) if spec.multi_input \
            else None
        self.nodes: dict[str, Node] = {}
        self.out_caps: dict[str, Caps] = {}
        self.stream_counts: dict[str, dict[str, int]] = {}
        self.stream_clocks: dict[str, dict[str, int]] = {}   # rates, for the audit
        self.counts_in, self.counts_out = _Counts(), _Counts()
        self.received = 0                       # inbox messages of any kind
        self.sent_to: dict[str, int] = {}       # messages handed to ZeroMQ per downstream replica
        self.busy = self.blocked = 0.0
        self.errors_skipped = 0
        self.started = self.draining = False
        self._next_stats = self._next_control = 0.0
        self._cpu_start = time.process_time()   # CPU of the run, not of the start-up imports
        self._parent = multiprocessing.parent_process()

    def connect_push(self, edge: Any, endpoint: str) -> zmq.Socket:
        """A PUSH to one downstream replica of `edge` (an OutputEdge), connected."""
        push = _socket(self.context, zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, edge.hwm if edge.routing == BALANCED
                        else batching(edge.hwm)[1])
        # The downstream inbox may not be bound yet: over ipc retry soon (ZeroMQ waits
        # 100 ms by default, which was most of a short run's fixed cost), backing off to
        # 100 ms. tcp keeps ZeroMQ's default: with it an intruder's message into the sink
        # was no longer read in test_security's control experiment (not understood yet).
        if endpoint.startswith("ipc://"):
            push.setsockopt(zmq.RECONNECT_IVL, _RECONNECT_MS)
            push.setsockopt(zmq.RECONNECT_IVL_MAX, _RECONNECT_MAX_MS)
        if self.spec.curve is not None:
            curve_client(push, self.spec.curve)
        push.connect(endpoint)
        return push

    # ----------------------------------------------------------------- control

    def _tell(self, kind: str, **fields: Any) -> None:
        self.control.send(encode_control(kind, **fields))

    def service(self) -> None:
        """Answer every pending control message, send stats when due, notice an orphaned run."""
        # EVENTS is a plain getsockopt: Socket.poll(0) builds a Poller on every call.
        while self.control.getsockopt(_EVENTS) & _POLLIN:
            message = decode_control(self.control.recv(), expect=COORDINATOR_MESSAGES)
            if message["t"] == "shutdown":
                raise _Shutdown()
            if message["t"] == "start":
                self.started = True
            elif message["t"] == "drain":
                self.draining = True
            elif message["t"] == "resume":
                self.resume_to.append(message["to"])   # sent at the next safe point
            elif message["t"] == "ack":
                self.replay.acknowledge(message)
            elif message["t"] == "hold":
                self.replay.hold(message["to"])
        now = time.monotonic()
        self._next_control = now + _CONTROL_EVERY_S
        self._send_acks(now)
        if now >= self._next_stats:
            # On a grid shared by every worker (one monotonic clock): a blocked upstream
            # reports at the tick, a busy downstream after its message, so the coordinator
            # compares counts taken at about the same time (queue depth).
            interval = self.spec.stats_interval
            self._next_stats = (math.floor(now / interval) + 1) * interval
            self._tell("stats", **self.statistics())
            if self._parent is not None and not self._parent.is_alive():
                raise FlowError(f"worker {self.id}: the coordinator process went away")

    def statistics(self) -> dict[str, Any]:
        return {"in": self.counts_in.as_dict(), "out": self.counts_out.as_dict(),
                "received": self.received, "sent_to": dict(self.sent_to),
                "busy": self.busy, "blocked": self.blocked, "streams": len(self.nodes),
                "cpu": time.process_time() - self._cpu_start,
                "errors_skipped": self.errors_skipped}

    def _wait_control(self, seconds: float) -> bool:
        """Service control until `started` is set (True) or `seconds` pass (False).

        A shutdown ends any wait by raising _Shutdown.
        """
        deadline = time.monotonic() + seconds
        while not self.started:
            if time.monotonic() >= deadline:
                return False
            self._control_poller.poll(_POLL_MS)
            self.service()
            self._resume()
        return True

    def _poll(self, poller: zmq.Poller, seconds: float) -> list[tuple[Any, int]]:
        """Wait on `poller`'s sockets (control among them) for up to `seconds`, never past
        the time stats are due; what poll gave. One poll call per wake-up: no look at the
        control socket of its own, no zmq.Again (each costs more than the poll)."""
        timeout = min(seconds, self._next_stats - time.monotonic())
        return poller.poll(math.ceil(timeout * 1000) if timeout > 0 else 0)

    def _answer(self, ready: list[tuple[Any, int]]) -> None:
        """After a `_poll`: answer control if it had anything, send stats and acks if due."""
        now = time.monotonic()
        if now >= self._next_stats or any(s is self.control for s, _ in ready):
            self.service()
        else:
            self._next_control = now + _CONTROL_EVERY_S   # poll just looked at it
            self._send_acks(now)

    def _send_acks(self, now: float) -> None:
        """The acknowledgements this worker owes lossless-restart stages before it (replay.py),
        when due."""
        if self.acks is not None:
            acks = self.acks.due(now)
            if acks is not None:
                self._tell("ack", **acks)

    def _idle_until(self, deadline: float) -> None:
        """How a paced source waits here (``flowengine.pacing``): what it made so far goes
        out (one batch per socket for the whole tick), then wait awake to control until
        `deadline`; a drain ends the wait at once. Wakes up at most 1 ms late."""
        self._flush_all()
        while not self.draining:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._answer(self._poll(self._control_poller, min(left, _IDLE_WAIT_S)))

    def _resume(self) -> None:
        """Caps (and eof) to replacement replicas downstream; only between two buffers."""
        while self.resume_to:
            resume_downstream(self, self.resume_to.pop(0))

    # ------------------------------------------------------------------ sending

    def _send(self, dest: str, sock: zmq.Socket, frames: list[Frame],
              nbytes: int | None = None) -> None:
        """Queue one message (of `nbytes` bytes) for `dest`; its batch goes out when full (or
        at the next flush)."""
        if self.replay is not None and not self.replay.on_send(dest, frames):
            return                  # kept for a replacement of `dest` (resume.ReplaySender)
        outbox = self.outboxes[dest]
        if outbox.add(frames, message_nbytes(frames) if nbytes is None else nbytes):
            self._flush(outbox)

    def _flush(self, outbox: Outbox) -> None:
        """Send `outbox` as one batch without ever blocking for good: wait for room in slices,
        servicing control, and let the other outboxes go meanwhile when their sockets have
        room (a stage waiting on one output never holds back another)."""
        count = len(outbox)
        frames, copy = outbox.take()
        sock = outbox.socket
        while True:
            try:
                sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=copy)
                # Counted once ZeroMQ has them: the queue depth downstream is what is there.
                self.sent_to[outbox.dest] = self.sent_to.get(outbox.dest, 0) + count
                return
            except zmq.Again:
                pass
            self._wait_for_room([sock])
            if self.replay is not None and outbox.dest in self.replay.held:
                return              # its replica died: these are in the replay buffer

    def _wait_for_room(self, sockets: list[zmq.Socket]) -> None:
        """One slice of waiting for room on `sockets` (backpressure), awake to control:
        batches that can go elsewhere go first, and the time counts as blocked."""
        self._flush_ready()
        poller = zmq.Poller()
        for sock in sockets:
            poller.register(sock, zmq.POLLOUT)
        poller.register(self.control, zmq.POLLIN)
        waited = time.perf_counter()
        self._poll(poller, _POLL_MS / 1000)   # a blocked stage reports on the stats tick
        self.blocked += time.perf_counter() - waited
        self.service()

    def _flush_ready(self) -> None:
        """Send every waiting batch whose socket has room now; never waits."""
        for outbox in self.outboxes.values():
            if len(outbox) and outbox.socket.getsockopt(_EVENTS) & _POLLOUT:
                self._flush(outbox)

    def _flush_all(self) -> None:
        """Send every waiting batch (before the worker waits for input or control)."""
        for outbox in self.outboxes.values():
            if len(outbox):
                self._flush(outbox)

    def _send_stream(self, stream: str, frames: list[Frame], nbytes: int | None = None) -> None:
        """One message of `stream` to the replica its stream sticks to, on every sticky edge."""
        for sockets, router in zip(self.edges, self.routers):
            if isinstance(router, StickyRouter):
                dest, sock = sockets[router.replica(stream)]
                self._send(dest, sock, frames, nbytes)

    def _send_to_every_replica(self, frames_for: Any) -> None:
        """Caps or eos on every balanced edge: `frames_for(router)` gives (replica, frames)."""
        for sockets, router in zip(self.edges, self.routers):
            if isinstance(router, BalancedRouter):
                for replica, frames in frames_for(router):
                    dest, sock = sockets[replica]
                    self._send(dest, sock, frames)

    def _send_balanced_data(self, buf: AudioFrame | Packet) -> None:
        """One data message on every balanced edge, to a replica with room."""
        for sockets, router in zip(self.edges, self.routers):
            if isinstance(router, BalancedRouter):
                replica = self._replica_with_room(sockets, router)
                dest, sock = sockets[replica]
                self._send(dest, sock, router.data(replica, buf))

    def _replica_with_room(self, sockets: list[tuple[str, zmq.Socket]],
                           router: BalancedRouter) -> int:
        """The router's pick among the replicas whose queue has room; wait (awake) if none has."""
        while True:
            writable = [bool(sock.getsockopt(_EVENTS) & _POLLOUT) for _, sock in sockets]
            choice = router.choose(writable)
            if choice is not None:
                return choice
            self._wait_for_room([sock for _, sock in sockets])

    def _emit(self, stream: str, buf: Any, node: Node) -> None:
        """Send one output buffer of `stream`, preceded by caps when they are new or changed."""
        if buf.stream != stream:
            buf.stream = stream  # a node may not know the stream id; the stream keeps its path
        caps = self.out_caps.get(stream)
        if type(buf) is AudioFrame:
            # Identity first: a stream's frames usually share one format object.
            changed = caps is None or (caps.format is not buf.format and caps.format != buf.format) \
                or caps.time_base != buf.time_base
            if changed:
                caps = Caps.for_frame(buf)
        else:
            changed = caps is None or caps.codec != buf.codec
            if changed:
                caps = Caps.for_packet(buf, node.output_format)
        if changed:
            self.out_caps[stream] = caps
            self._send_stream(stream, self.sender.caps(stream, caps))
            self._send_to_every_replica(lambda router: router.caps(stream, caps))
        # An ordered stage's output keeps its input's place in the stream (oq, pts).
        order = self.stamp.stamp(stream, buf) if self.stamp is not None else None
        frames = self.sender.data(buf, order=order)
        nbytes = message_nbytes(frames)
        self._send_stream(stream, frames, nbytes)
        if self.balanced:
            self._send_balanced_data(buf)
        self.counts_out.add(buf, nbytes)
        self._count(stream, "out", buf, _rate_of(node))

    def _end_stream_downstream(self, stream: str) -> None:
        order_end = self.stamp.order_end(stream) if self.stamp is not None else None
        if stream in self.out_caps:
            del self.out_caps[stream]
            self._send_stream(stream, self.sender.eos(stream, order_end=order_end))
            self._send_to_every_replica(lambda router: router.eos(stream))
            for router in self.routers:
                if isinstance(router, StickyRouter):
                    router.forget(stream)

    def _count(self, stream: str, side: str, buf: Any, rate: int | None = None) -> None:
        """Per-stream counts of one buffer, and its clock for the end-of-run audit."""
        clocks = self.stream_clocks.get(stream)
        if clocks is None:
            clocks = self.stream_clocks[stream] = {}
        count_buffer(self._stream_counts(stream), clocks, side, buf, rate)

    def _stream_counts(self, stream: str) -> dict[str, int]:
        counts = self.stream_counts.get(stream)
        if counts is None:
            counts = self.stream_counts[stream] = new_stream_counts()
        return counts

    # ------------------------------------------------------------------- nodes

    def _drain_node(self, stream: str, node: Node, flushing: bool) -> None:
        """Pull `node` until AGAIN (or EOF once flushing), sending what it gives."""
        start = time.perf_counter()
        for out in pull_outputs(node, flushing, f"stage {self.spec.stage!r} stream {stream!r}"):
            self.busy += time.perf_counter() - start
            if self.edges:
                self._emit(stream, out, node)
            start = time.perf_counter()
        self.busy += time.perf_counter() - start

    def _push(self, stream: str, node: Node, buf: Any) -> None:
        start = time.perf_counter()
        node.push(buf)
        self.busy += time.perf_counter() - start
        self._drain_node(stream, node, flushing=buf is None)

    def _flush_stream(self, stream: str) -> None:
        node = self.nodes.pop(stream)
        try:
            self._push(stream, node, None)
        finally:
            node.close()
        self._end_stream_downstream(stream)

    def _on_data(self, stream: str, buf: Any) -> None:
        node = self.nodes[stream]
        try:
            self._push(stream, node, buf)
        except (CodecError, WireError) as exc:
            if self.spec.on_error != "skip":
                raise
            self.errors_skipped += 1
            counts = self._stream_counts(stream)   # the audit reports the stream as skipped
            counts["errors"] = counts.get("errors", 0) + 1
            limit = self.spec.max_errors
            if limit is not None and self.errors_skipped > limit:
                raise FlowError(f"stage {self.spec.stage!r} stream {stream!r}: "
                                f"{self.errors_skipped} errors skipped, over max_errors={limit}; "
                                f"last: {exc}") from exc

    # ------------------------------------------------------------------- loops

    def _run_source(self) -> None:
        if not self._wait_control(START_WAIT_SECONDS):
            raise FlowError(f"worker {self.id}: no start from the coordinator within "
                            f"{START_WAIT_SECONDS:.0f} s")
        node = self._new_node()
        try:
            with waiting_with(self._wait_in_source):
                while not self.draining:
                    if time.monotonic() >= self._next_control:   # (waits look at it anyway)
                        self.service()
                    self._resume()
                    start = time.perf_counter()
                    out = node.pull_ready(self._stream_has_room) if self.picks_streams \
                        and hasattr(node, "pull_ready") else node.pull()
                    self.busy += time.perf_counter() - start
                    if out is EOF:
                        break
                    if out is AGAIN:  # streams that ended meanwhile end now, not later
                        self._end_source_streams(node)
                    if out is AGAIN and self._wait_for_room_downstream():
                        continue
                    if out is AGAIN:  # nothing yet: wait a little, awake to control
                        self._idle_until(time.monotonic() + _AGAIN_WAIT_S)
                        continue
                    self._count(out.stream, "in", out, _rate_of(node))
                    self._emit(out.stream, out, node)
                    self._end_source_streams(node)
                self._end_source_streams(node)
        finally:
            node.close()
        for stream in self.sender.open_streams:
            self._end_stream_downstream(stream)

    def _stream_has_room(self, stream: str) -> bool:
        return all(router.has_room_for(stream) for router in self.routers
                   if isinstance(router, StickyRouter))

    def _wait_for_room_downstream(self) -> bool:
        """No stream of the source had room: wait (one bounded slice) for room on the full
        replicas. False when none is full (the source itself had nothing yet)."""
        full = [sock for sockets in self.edges for _, sock in sockets if not _writable(sock)]
        if full:
            self._wait_for_room(full)
        return bool(full)

    def _wait_in_source(self, deadline: float) -> None:
        """A paced source's wait inside pull(): idle, and not counted as busy."""
        waited = time.perf_counter()
        self._idle_until(deadline)
        self.busy -= time.perf_counter() - waited

    def _end_source_streams(self, node: Node) -> None:
        """End at once the streams a multi-stream source finished (their files close early);
        a stream it skipped after an error is counted, with errors=1 in its stream counts."""
        for end in take_ended_streams(node):
            if end.error is not None:
                self.errors_skipped += 1
                self._stream_counts(end.stream)["errors"] = 1
            self._end_stream_downstream(end.stream)

    def _run_inbox(self) -> None:
        """One ZeroMQ message (a batch) per turn, each turn one poll of control and inbox:
        without waiting while this worker has messages queued to send (a look whether more
        input is there to batch with), else until something comes. Nothing more to read
        now: the queued messages go out, then the worker waits."""
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.inbox, zmq.POLLIN)
        while not self.inbox_state.run_ended:
            queued = any(len(outbox) for outbox in self.outboxes.values())
            ready = self._poll(poller, 0.0 if queued else _IDLE_WAIT_S)
            frames = self._receive() if any(s is self.inbox for s, _ in ready) else None
            if frames is not None:
                self._on_message(frames)
            elif queued:
                self._flush_all()
            self._answer(ready)   # after the message: its counts are in the stats
            self._resume()
            self._tick_multi_input()
        for stream in list(self.nodes):  # InboxState saw every eos already; none left open
            self._flush_stream(stream)
        if self.multi is not None:
            self._flush_multi_input()

    def _receive(self) -> list[zmq.Frame] | None:
        """One multipart message from the inbox, which poll said has one; None when it had
        not after all (seen over tcp while a peer connects). recv_multipart's flag enums
        cost more than the recv calls."""
        try:
            frame = self.inbox.recv(_NOBLOCK, copy=False)
        except zmq.Again:
            return None
        frames = [frame]
        while frame.more:
            frame = self.inbox.recv(_NOBLOCK, copy=False)
            frames.append(frame)
        return frames

    def _on_message(self, frames: list[zmq.Frame]) -> None:
        """One received ZeroMQ message: a batch of wire messages or a single one."""
        try:
            messages = decode_batch(frames)
        except WireError as exc:
            raise WireError(f"stage {self.spec.stage!r} replica {self.spec.replica}: bad "
                            f"message on its inbox (fed by {', '.join(self.spec.upstream)}): "
                            f"{exc}") from None
        for message in messages:
            self.received += 1
            self._on_wire_message(message)  # after the run's end, InboxState refuses more

    def _on_wire_message(self, message: Any) -> None:
        events = self.inbox_state.receive(message)
        if self.merge is not None:  # parts of streams spread over an ordered stage, in order
            events = self.merge.receive(events, message.order, message.info.get("order_end"))
        for event in events:
            if self.multi is not None:
                self._on_multi_input_event(event, message.nbytes)
                continue
            if isinstance(event, StreamData):
                self._count(event.stream, "in", event.buffer)
                self.counts_in.add(event.buffer, message.nbytes)
                if self.stamp is not None:
                    self.stamp.take(event.stream, message.order, event.buffer)
                self._on_data(event.stream, event.buffer)
                if self.stamp is not None:
                    self.stamp.done(event.stream)
            elif isinstance(event, StreamCaps):
                self.origins.check(event.sender, event.stream)
                if event.stream not in self.nodes:
                    self.nodes[event.stream] = self._new_node()
            elif isinstance(event, StreamEnd):
                if self.stamp is not None:
                    self.stamp.end(event.stream, message.info.get("order_end"))
                self._flush_stream(event.stream)
            elif isinstance(event, RunEnd):
                break

    # ----------------------------------------------------------- multi-input

    def _new_node(self) -> Node:
        spec = self.spec
        return create_stage_node(spec.op, spec.kind, spec.params, block_samples=spec.block_samples,
                                 fused=spec.fused, name=spec.stage)

    def _on_multi_input_event(self, event: Any, nbytes: int) -> None:
        """Every input stream into the one node, keyed by (upstream stage, stream id)."""
        multi = self.multi
        start = time.perf_counter()
        if isinstance(event, StreamData):
            self._count(event.stream, "in", event.buffer)
            self.counts_in.add(event.buffer, nbytes)
            multi.data(event.sender, event.stream, event.buffer)
        elif isinstance(event, StreamEnd):
            multi.end(event.sender, event.stream)
        elif isinstance(event, SenderEnd):
            multi.sender_ended(event.sender)
        else:
            return
        self.busy += time.perf_counter() - start
        self._drain_node(multi.stream, multi.node, flushing=False)

    def _tick_multi_input(self) -> None:
        """A live mixer pads a late input after a wall-clock wait: give it a chance to."""
        if self.multi is not None and self.multi.node.needs_clock:
            self._drain_node(self.multi.stream, self.multi.node, flushing=False)

    def _flush_multi_input(self) -> None:
        multi = self.multi
        try:
            self._push(multi.stream, multi.node, None)
        finally:
            multi.node.close()
        self._end_stream_downstream(multi.stream)

    def run(self) -> int:
        """Ready, run, EOF downstream, done, wait for shutdown. Returns the exit code."""
        # Heavy imports now, in every worker at once, not on the first buffer down the chain.
        warm([(member.op, member.params) for member in self.spec.fused] if self.spec.fused
             else [(self.spec.op, self.spec.params)])
        # What the imports made lives as long as the process: out of the collector's sight,
        # so a full collection during the run does not walk it (tens of ms per pass here).
        gc.freeze()
        self._cpu_start = time.process_time()
        self._tell("ready", pid=os.getpid())
        if self.inbox is None:
            self._run_source()
        else:
            self._run_inbox()
        eof = self.sender.eof()
        for sockets in self.edges:  # the run's end goes to every downstream replica
            for dest, sock in sockets:
                self._send(dest, sock, eof)
        self._flush_all()
        self._tell("done", **self.statistics(),
                   stream_counts={s: c for s, c in self.stream_counts.items()},
                   stream_clocks=self.stream_clocks)
        try:
            # Every data socket stays open until the coordinator says the end is acknowledged.
            self.started = False  # now waits for shutdown alone (start came long ago)
            self._wait_control(SHUTDOWN_WAIT_SECONDS)
        except _Shutdown:
            return 0
        print(f"flowengine worker {self.id}: no shutdown from the coordinator within "
              f"{SHUTDOWN_WAIT_SECONDS:.0f} s after done; exiting", file=sys.stderr)
        return 1

    def close(self, linger_ms: int) -> None:
        for sock in self.sockets:
            sock.close(linger=linger_ms)


def _writable(sock: zmq.Socket) -> bool:
    """Room for one more message (EVENTS is a plain getsockopt; poll(0) builds a Poller)."""
    return bool(sock.getsockopt(_EVENTS) & _POLLOUT)


def _socket(context: zmq.Context, kind: int) -> zmq.Socket:
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    return sock


@contextlib.contextmanager
def _profiled(worker_id: str):
    """cProfile the block into $FLOWENGINE_PROFILE_DIR/<stage>-<replica>.prof when that is set."""
    directory = os.environ.get(PROFILE_ENV)
    if not directory:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        path = os.path.join(directory, worker_id.replace(":", "-") + ".prof")
        try:
            profile.dump_stats(path)
        except OSError as exc:   # never hides how the worker ended
            print(f"flowengine: worker {worker_id}: cannot write its profile {path}: {exc}",
                  file=sys.stderr)


def run_worker(spec: WorkerSpec) -> None:
    """Process entry point: run one worker, report any failure, exit 0 / non-zero."""
    # Ctrl-C reaches the whole process group; only the coordinator decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    context = zmq.Context()
    # With CURVE, the ZAP handler runs before the inbox binds: no unchecked moment.
    auth = start_authenticator(context, spec.curve) \
        if spec.curve is not None and spec.inbox_endpoint is not None else None
    control = _socket(context, zmq.DEALER)
    control.setsockopt(zmq.IDENTITY, spec.id.encode())
    if spec.curve is not None:
        curve_client(control, spec.curve)
    control.connect(spec.control_endpoint)
    worker: Worker | None = None
    code, linger = 1, LINGER_MS
    try:
        worker = Worker(spec, context, control)
        with _profiled(spec.id):
            code = worker.run()
    except _Shutdown:
        code, linger = 0, 0  # the run was stopped: nothing queued matters any more
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the coordinator
        report = encode_control("error", tb=traceback.format_exc(),
                                message=f"{type(exc).__name__}: {exc}")
        try:
            control.send(report, flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            traceback.print_exc()  # the coordinator still sees the exit code
    finally:
        if worker is not None:
            worker.close(linger)
        if auth is not None:
            auth.stop()
        context.destroy(linger=linger)
    sys.exit(code)
