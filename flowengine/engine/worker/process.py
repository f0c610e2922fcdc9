"""One worker process: one replica of one stage, between ZeroMQ sockets and its nodes.

Theory of operation
-------------------
Sockets: a DEALER to the coordinator's ROUTER (identity "stage:replica"), a
bound PULL inbox (RCVHWM = the stage's hwm) unless the stage is a source,
and one connected PUSH per downstream replica (SNDHWM = that stage's hwm),
so this worker chooses where each message goes. With ``security.curve`` the
inbox is a CURVE server behind a ZAP handler and every other socket a CURVE
client (``security.py``).

The worker's jobs, one module each:

* this module: the sockets, the life cycle (ready, run, EOF downstream,
  done, wait for shutdown) and the control channel: answering the
  coordinator, stats about once a second (the coordinator's heartbeat),
  acknowledgements, and the bounded waits awake to control every other part
  uses;
* ``feed.py``: moving messages between the sockets and the stage loop
  (``flowengine.core.loop``), for a stage fed by its inbox (a node per
  stream, or a mixer's one node) and for a source (pacing, picking streams
  whose replica has room, ending streams early); fan-in checks in
  ``origins.py``, a replica's share of a source's streams in ``shares.py``;
* ``sendpath.py``: routing (``routing.py``), batches (``outbox.py``) and
  non-blocking sends; ``readiness.py``: whether a socket can be read or
  written now;
* ``profiling.py``: the optional cProfile of the run.

The run ends when EOF came from every upstream sender (``InboxState``), or
when the source ends: send EOF to every downstream replica, report ``done``
with the final counts, then keep every socket open until the coordinator's
``shutdown`` (bounded) — a socket closed right after its last send can lose
what is still queued, so delivery never relies on linger; linger only bounds
the exit.

Never blocked for good: sends are non-blocking; when a downstream queue is
full (backpressure) the worker polls for room in short slices while it keeps
answering control messages and sending stats, so a stuck downstream shows as
time blocked on send, not as a hang. Any exception is reported as ``error``
with its traceback before the process exits non-zero.
"""

from __future__ import annotations

import gc
import math
import multiprocessing
import os
import select
import signal
import sys
import time
import traceback
from typing import Any

import zmq

from flowengine.errors import FlowError
from flowengine.logs import show_messages_as_lines
from flowengine.ops.node import Node
from flowengine.engine.control.channel import encode_control, decode_control, COORDINATOR_MESSAGES
from flowengine.core.loop import MixLoop, NullOutlet, SourceLoop, StageLoop
from flowengine.engine.worker.origins import MultiInputFeed, StreamOrigins
from flowengine.engine.worker.feed import IDLE_WAIT_S, WireOutlet, run_inbox, run_source
from flowengine.engine.worker.outbox import batching
from flowengine.engine.plan import WorkerSpec, sender_id
from flowengine.engine.worker.preload import warm
from flowengine.engine.worker.readiness import readable_check
from flowengine.engine.worker.profiling import PROFILE_ENV, profiled
from flowengine.engine.wire.protocol import InboxState, StreamSender
from flowengine.engine.recovery.replay import AckReporter, ReplayStamp
from flowengine.engine.recovery.resume import ReplaySender, resume_downstream
from flowengine.engine.worker.routing import BALANCED, OrderedMerge, OrderStamp
from flowengine.engine.security import curve_client, curve_server, start_authenticator
from flowengine.engine.worker.sendpath import SendPath
from flowengine.engine.worker.shares import share_claim
from flowengine.core.lookup import create_node
from flowengine.core.stage import create_stage_node

__all__ = ["run_worker", "Worker", "LINGER_MS", "SHUTDOWN_WAIT_SECONDS", "PROFILE_ENV"]

LINGER_MS = 1000
SHUTDOWN_WAIT_SECONDS = 30.0
_POLL_MS = 100
_CONTROL_EVERY_S = 0.01    # a busy source or inbox looks at the control socket this often
_RECONNECT_MS, _RECONNECT_MAX_MS = 5, 100   # a PUSH's retries to connect to an inbox
# Plain ints: ZeroMQ's flag enums cost microseconds per operation in a loop run per message.
_READABLE = select.POLLIN


class _Shutdown(Exception):
    """The coordinator ended the run (normally or because of a failure elsewhere)."""


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
                                  else batching(spec.inbox_hwm, spec.live)[1])
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
        # Built once: Socket.poll() builds a Poller on every call.
        self._control_poller = zmq.Poller()
        self._control_poller.register(self.control, zmq.POLLIN)
        # Idle waits block in one poll(2) on the sockets' descriptors (`wait_readable`).
        self.control_fd: int = control.getsockopt(zmq.FD)
        self.inbox_fd: int | None = self.inbox.getsockopt(zmq.FD) if self.inbox else None
        self._fd_polls: dict[int | None, Any] = {}
        self._control_poll = self.readable_poll()   # a paced source's wait, every tick
        self._control_readable = readable_check(control)
        self._control_sent = False      # anything sent on control since it was last read dry

        # A replacement worker sends as "stage:replica@N" (protocol.InboxState, Restart).
        self.sender = StreamSender(spec.wire_id, index_data=bool(spec.replay_to))
        # (replica, generation) of replacements waiting for our caps, or our replay
        self.resume_to: list[tuple[str, int]] = []
        self.stamp = OrderStamp(spec.stage) if spec.ordered else \
            ReplayStamp(spec.stage) if spec.replay else None
        self.send = SendPath(spec.outputs, self.edges, self.id, self.sender, self.stamp,
                             self._wait_for_room, spec.live)
        # The send path as resume.py (the restart glue) reaches it, through the worker.
        self.outboxes, self.routers, self.out_caps = \
            self.send.outboxes, self.send.routers, self.send.out_caps
        self._send, self._send_stream, self._flush_all = \
            self.send.send, self.send.send_stream, self.send.flush_all
        merged_stages = sorted({s.rpartition(":")[0] for s in spec.merge_senders})
        self.merge = OrderedMerge(spec.merge_senders, spec.reorder_window,
                                  stage=", ".join(merged_stages)) if spec.merge_senders else None
        self.inbox_state = InboxState(spec.upstream, resumed=spec.generation > 0,
                                      indexed=spec.indexed_senders) if spec.upstream else None
        # Lossless restarts (replay.py): buffers for the replicas after us that have them, and
        # the acknowledgements we owe the ones before us.
        self.replay = ReplaySender(self, spec.replay_to, spec.replay_messages,
                                   spec.replay_bytes) if spec.replay_to else None
        self.send.replay = self.replay
        self.acks = AckReporter(self.inbox_state, spec.indexed_senders, spec.ack_every) \
            if spec.indexed_senders else None
        # The stage itself: the stage loop the in-process runner runs too (core/loop.py),
        # its outlet the wire (or nothing, when no stage reads this one).
        outlet = WireOutlet(self.send) if self.edges else NullOutlet()
        self.stage: StageLoop | None = None
        self.mix: MixLoop | None = None
        self.source: SourceLoop | None = None       # made at start (loop.run_source)
        # Fan-in: a stream id from one upstream stage only; a mixer's one node takes them all.
        self.origins = StreamOrigins(spec.stage, spec.upstream)
        if spec.multi_input:
            self.mix_feed = MultiInputFeed(spec.upstream)
            self.mix = MixLoop(spec.stage, self.new_node(), outlet, self.mix_feed.groups)
        elif spec.inbox_endpoint is not None:
            self.stage = StageLoop(spec.stage, self.new_node, outlet, on_error=spec.on_error,
                                   max_errors=spec.max_errors)
        # Whole streams per replica: the stages after the source run here too, each its own
        # stage loop (as in one process), so each is counted (and reported) as itself.
        self.chain: list[StageLoop] = []
        for member in reversed(spec.chain[1:]):
            outlet = StageLoop(member.name, self._member_node(member), outlet,
                               on_error=spec.on_error, max_errors=spec.max_errors)
            self.chain.insert(0, outlet)
        self.source_outlet = self.chain[0] if self.chain else outlet
        self.received = 0                       # inbox messages of any kind
        self.bytes_in = 0
        self.blocked = 0.0
        self.started = self.draining = False
        self._next_stats = self.next_control = 0.0
        self._parent = multiprocessing.parent_process()

    def connect_push(self, edge: Any, endpoint: str) -> zmq.Socket:
        """A PUSH to one downstream replica of `edge` (an OutputEdge), connected."""
        push = _socket(self.context, zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, edge.hwm if edge.routing == BALANCED
                        else batching(edge.hwm, self.spec.live)[1])
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

    def new_node(self) -> Node:
        """A node of this stage's operator for one stream (or the multi-input one)."""
        spec = self.spec
        return create_stage_node(spec.op, spec.kind, spec.params, block_samples=spec.block_samples,
                                 fused=spec.fused, name=spec.stage, values=spec.values)

    @staticmethod
    def _member_node(member: Any) -> Any:
        """The node factory of one stage of a whole-streams chain."""
        def make() -> Node:
            node = create_node(member.op, dict(member.params), member.values)
            node.name = member.name
            return node
        return make

    def new_source(self) -> Node:
        """The source node of a source stage (its share of the streams, when the plan splits
        them over replicas)."""
        spec = self.spec
        node = create_stage_node(spec.op, "source", spec.params, block_samples=spec.block_samples,
                                 name=spec.stage, values=spec.values)
        if spec.share is not None:
            claim, one_at_a_time = share_claim(spec.share, self.context, spec.curve)
            node.share(claim, one_at_a_time=one_at_a_time)
        return node

    @property
    def loops(self) -> list[Any]:
        """Every stage loop of this worker, the first one first."""
        return [loop for loop in (self.source, self.stage, self.mix) if loop is not None] + \
            self.chain

    @property
    def counted(self) -> Any:
        """The loop whose counts are the stage's (a whole-streams chain: its last stage)."""
        return self.loops[-1] if self.loops else None

    @property
    def busy(self) -> float:
        return sum(loop.busy for loop in self.loops)

    def _tell(self, kind: str, **fields: Any) -> None:
        self.control.send(encode_control(kind, **fields))
        self._control_sent = True     # the send may have taken a message's signal (wait_readable)

    def service(self) -> None:
        """Answer every pending control message, send stats when due, notice an orphaned run."""
        while self._control_readable():
            message = decode_control(self.control.recv(), expect=COORDINATOR_MESSAGES)
            if message["t"] == "shutdown":
                raise _Shutdown()
            if message["t"] == "start":
                self.started = True
            elif message["t"] == "drain":
                self.draining = True
            elif message["t"] == "resume":
                # sent at the next safe point
                self.resume_to.append((message["to"], message["generation"]))
            elif message["t"] == "ack":
                self.replay.acknowledge(message)
            elif message["t"] == "hold":
                self.replay.hold(message["to"], message["generation"])
            elif message["t"] == "forget":     # ended streams no replay can bring again
                self.inbox_state.forget(message["sender"], message["streams"],
                                        message["generation"], message["replayed"])
        now = time.monotonic()
        self.next_control = now + _CONTROL_EVERY_S
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
        counted = self.counted
        stats = _loop_stats(counted, self.bytes_in, self.send.bytes_out,
                            took=self.inbox is not None)
        if self.chain:              # whole streams: every stage of the chain as itself
            stats["members"] = {loop.name: _loop_stats(loop, 0, 0, took=loop is not self.source)
                                for loop in self.loops}
        return {**stats, "received": self.received, "sent_to": dict(self.send.sent_to),
                "busy": self.busy, "blocked": self.blocked,
                # The whole process's (it exists for this run): its start-up too.
                "cpu": time.process_time(),
                "errors_skipped": sum(loop.errors_skipped for loop in self.loops)}

    def stream_counts(self) -> dict[str, Any]:
        """Per stream, the audit's counts and clocks (rates) of the stage (and of each stage
        of a whole-streams chain)."""
        counted = self.counted
        result = {"stream_counts": _counts_of(counted), "stream_clocks": _clocks_of(counted)}
        if self.chain:
            result["member_counts"] = {loop.name: {"stream_counts": _counts_of(loop),
                                                   "stream_clocks": _clocks_of(loop)}
                                       for loop in self.loops}
        return result

    def lossless_sizes(self) -> dict[str, Any]:
        """What the bookkeeping of lossless restarts (replay.py) holds now: a long run of many
        short streams must not grow it (tests read it from ``done``)."""
        sizes: dict[str, Any] = {}
        if self.acks is not None:
            sizes["inbox"] = self.inbox_state.index.sizes()
            sizes["reporter"] = self.acks.sizes()
        if self.replay is not None:
            sizes["buffers"] = {dest: {"streams": len(buffer.streams),
                                       "messages": buffer.messages}
                                for dest, buffer in self.replay.buffers.items()}
        return sizes

    def wait_control(self, seconds: float) -> bool:
        """Service control until `started` is set (True) or `seconds` pass (False).

        A shutdown ends any wait by raising _Shutdown.
        """
        deadline = time.monotonic() + seconds
        while not self.started:
            if time.monotonic() >= deadline:
                return False
            self._control_poller.poll(_POLL_MS)
            self.service()
            self.resume_replicas()
        return True

    def wait_for_shutdown(self, seconds: float) -> None:
        """Service control for up to `seconds`; only a shutdown ends the wait early (by raising
        _Shutdown). Not `wait_control`: a `start` read now must not end it, and a worker fed by
        an inbox never waits for its start, so it can finish its whole run before reading it
        (its upstream started and ended while the coordinator was still sending the starts)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._control_poller.poll(_POLL_MS)
            self.service()
            self.resume_replicas()

    def poll(self, poller: zmq.Poller, seconds: float) -> list[tuple[Any, int]]:
        """Wait on `poller`'s sockets (control among them) for up to `seconds`, never past
        the time stats are due; what poll gave. One poll call per wake-up: no look at the
        control socket of its own, no zmq.Again (each costs more than the poll)."""
        timeout = min(seconds, self._next_stats - time.monotonic())
        return poller.poll(math.ceil(timeout * 1000) if timeout > 0 else 0)

    def readable_poll(self, fd: int | None = None) -> Any:
        """A ``select.poll`` of the control socket's descriptor and `fd` (another socket's
        ZMQ_FD, or a source's outside input), made once per descriptor."""
        poll = self._fd_polls.get(fd)
        if poll is None:
            poll = self._fd_polls[fd] = select.poll()
            poll.register(self.control_fd, _READABLE)
            if fd is not None:
                poll.register(fd, _READABLE)
        return poll

    def wait_readable(self, poll: Any, seconds: float) -> list[tuple[int, int]]:
        """Block in one poll(2) on `poll`'s descriptors (from `readable_poll`) for up to
        `seconds`, never past the time stats are due; then answer control if it stirred,
        send stats and acks if due. What poll(2) gave; nothing when control had a message
        already (answered: the caller looks again before it waits again).

        Not a blocking zmq_poll, which looks at each socket's EVENTS before and after (~9
        system calls and a page of Python per wake-up against 1 here). A socket's ZMQ_FD
        signals only a change, once: whatever reads the socket's commands (a send, a recv,
        a look at EVENTS) can take the signal of a message that then waits unseen. So a
        caller waits on a socket's descriptor only after that socket's EVENTS said it had
        nothing, and control is looked at again here when something was sent on it since
        `service` read it dry."""
        if self._control_sent:
            self._control_sent = False
            if self._control_readable():
                self.service()
                return []
        timeout = min(seconds, self._next_stats - time.monotonic())
        ready = poll.poll(math.ceil(timeout * 1000) if timeout > 0 else 0)
        now = time.monotonic()
        stirred = now >= self._next_stats
        for fd, _ in ready:     # a plain loop: a generator costs more for 1 or 2 descriptors
            if fd == self.control_fd:
                stirred = True
        if stirred:
            self.service()
        else:
            self.next_control = now + _CONTROL_EVERY_S   # nothing came on control
            if self.acks is not None:
                self._send_acks(now)
        return ready

    def after_message(self) -> None:
        """After an inbox message: control (and stats) when due, acks when due."""
        now = time.monotonic()
        if now >= self.next_control:
            self.service()
        elif self.acks is not None:
            self._send_acks(now)

    def _send_acks(self, now: float) -> None:
        """The acknowledgements this worker owes lossless-restart stages before it (replay.py),
        when due."""
        if self.acks is not None:
            acks = self.acks.due(now)
            if acks is not None:
                self._tell("ack", **acks)

    def idle_until(self, deadline: float, fd: int | None = None) -> None:
        """How a paced source waits here (``flowengine.ops.pacing``): what it made so far goes
        out (one batch per socket for the whole tick), then wait awake to control until
        `deadline`, or until `fd` (a source's outside input) can be read; a drain ends the
        wait at once. Wakes up at most 1 ms late."""
        self.send.flush_all()
        poll = self._control_poll if fd is None else self.readable_poll(fd)
        while not self.draining:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready = self.wait_readable(poll, min(left, IDLE_WAIT_S))
            if fd is not None and any(item == fd for item, _ in ready):
                return

    def resume_replicas(self) -> None:
        """Caps (and eof) to replacement replicas downstream; only between two buffers."""
        while self.resume_to:
            resume_downstream(self, *self.resume_to.pop(0))

    def _wait_for_room(self, sockets: list[zmq.Socket]) -> None:
        """The send path's one slice of waiting for room on `sockets` (backpressure), awake to
        control; the time counts as blocked."""
        poller = zmq.Poller()
        for sock in sockets:
            poller.register(sock, zmq.POLLOUT)
        poller.register(self.control, zmq.POLLIN)
        waited = time.perf_counter()
        self.poll(poller, _POLL_MS / 1000)   # a blocked stage reports on the stats tick
        self.blocked += time.perf_counter() - waited
        self.service()

    # --------------------------------------------------------------- life cycle

    def run(self) -> int:
        """Ready, run, EOF downstream, done, wait for shutdown. Returns the exit code."""
        # Heavy imports now, in every worker at once, not on the first buffer down the chain.
        spec = self.spec
        warm([(member.op, member.params, member.values) for member in spec.fused] if spec.fused
             else [(spec.op, spec.params, spec.values)]
             + [(member.op, member.params, member.values) for member in spec.chain[1:]])
        # What the imports made lives as long as the process: out of the collector's sight,
        # so a full collection during the run does not walk it (tens of ms per pass here).
        gc.freeze()
        self._tell("ready", pid=os.getpid())
        if self.inbox is None:
            run_source(self)
        else:
            run_inbox(self)
        self.send.send_eof()   # the run's end goes to every downstream replica
        self._tell("done", **self.statistics(), **self.stream_counts(),
                   lossless=self.lossless_sizes())
        try:
            # Every data socket stays open until the coordinator says the end is acknowledged.
            self.wait_for_shutdown(SHUTDOWN_WAIT_SECONDS)
        except _Shutdown:
            return 0
        print(f"flowengine worker {self.id}: no shutdown from the coordinator within "
              f"{SHUTDOWN_WAIT_SECONDS:.0f} s after done; exiting", file=sys.stderr)
        return 1

    def close(self, linger_ms: int) -> None:
        for sock in self.sockets:
            sock.close(linger=linger_ms)


def _loop_stats(loop: Any, bytes_in: int, bytes_out: int, took: bool) -> dict[str, Any]:
    """What one loop took in and gave out (messages, samples, bytes, seconds of audio), from
    its per-stream counts; `took` False: a source, which takes nothing in."""
    counts = loop.counts.values() if loop is not None else ()
    took_in = {"messages": 0, "samples": 0, "bytes": bytes_in, "seconds": 0.0}
    gave = {"messages": 0, "samples": 0, "bytes": bytes_out, "seconds": 0.0}
    for stream in counts:
        if took:
            took_in["messages"] += stream.in_messages
            took_in["samples"] += stream.in_samples
            if stream.in_rate:
                took_in["seconds"] += stream.in_samples / stream.in_rate
        gave["messages"] += stream.out_messages
        gave["samples"] += stream.out_samples
        if stream.out_rate:
            gave["seconds"] += stream.out_samples / stream.out_rate
    return {"in": took_in, "out": gave, "streams": len(getattr(loop, "nodes", ())),
            "busy": getattr(loop, "busy", 0.0),
            "errors_skipped": getattr(loop, "errors_skipped", 0)}


def _counts_of(loop: Any) -> dict[str, dict[str, int]]:
    return {stream: c.counts() for stream, c in loop.counts.items()} if loop is not None else {}


def _clocks_of(loop: Any) -> dict[str, dict[str, int]]:
    return {stream: c.clocks() for stream, c in loop.counts.items()} if loop is not None else {}


def _socket(context: zmq.Context, kind: int) -> zmq.Socket:
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    return sock


def run_worker(spec: WorkerSpec) -> None:
    """Process entry point: run one worker, report any failure, exit 0 / non-zero."""
    # Ctrl-C reaches the whole process group, and so does SIGTERM from `timeout`, systemd or
    # `kill -TERM -PGID`: only the coordinator decides what they mean (the first drains). A
    # worker that ignores its shutdown is still stopped by the coordinator's SIGKILL.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    show_messages_as_lines()      # a warning (a truncated input file) is one line, as in the CLI
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
        with profiled(spec.id):
            code = worker.run()
    except _Shutdown:
        code, linger = 0, 0  # the run was stopped: nothing queued matters any more
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the coordinator
        # flowengine's own errors say what and where (with the notes that name the node of a
        # fused group); anything else is a bug and its traceback is the message.
        report = encode_control("error", tb=traceback.format_exc(),
                                message="\n".join([f"{type(exc).__name__}: {exc}",
                                                   *getattr(exc, "__notes__", ())]),
                                expected=isinstance(exc, FlowError))
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
