"""A worker's loop: its stage fed from the inbox, or its source pulled, onto the wire.

Theory of operation
-------------------
The stage itself is a stage loop (flowengine.core.loop) whose outlet is the
wire (`WireOutlet`, over the worker's send path), exactly the loop the
in-process runner runs; this module only moves messages between the sockets
and that loop, and keeps every wait bounded and awake to control.

**A stage fed by an inbox** (`run_inbox`): one ZeroMQ message (a batch) per
turn while the inbox's EVENTS say it has one; control is looked at after the
message (so its counts are in the stats) every ``CONTROL_EVERY_S`` while
messages keep coming. Nothing more to read now: the queued messages go out,
then the worker waits up to ``IDLE_WAIT_S`` in one poll(2) on the inbox's and
the control socket's descriptors (``Worker.wait_readable``): a live stage
wakes once per message, and control still wakes it at once. Each wire message
goes through the worker's ``InboxState`` (the per-edge protocol; an ordered
stage's parts merged back in order first), whose events drive the loop: caps
open a stream's node, data is a batch, eos ends the stream (an *aborted* eos
closes it unflushed), and the end of every sender closes the loop. The next
data message of an open stream (a live stream's steady state) takes the
short way: ``InboxState.next_data`` checks and counts it and its buffer goes
straight to the stage loop (no Message, no events); a stage with an ordered
merge, a mixer or a stamp takes every message the general way. A
multi-input stage (a mixer) is a `MixLoop`: every input goes to its one node,
keyed by the upstream stage, and a stage's input group ends once each of its
replicas sent its eof.

**A source** (`run_source`): a `SourceLoop` pulls the source one buffer at a
time until it ends or the coordinator says ``drain``; a source fused with the
stages after it (the planner's whole-streams layout) hands its buffers to
their `StageLoop` in this process. Before sticky replicas a multi-stream
source gives buffers of streams whose replica has room (``pull_ready``); only
when no open stream has room does the worker wait, one bounded slice awake
to control, for room. A source with nothing ready waits a little
(``_AGAIN_WAIT_S``). A paced (live) source waits for its next tick through
``Worker.idle_until`` (flowengine.ops.pacing): what it made for the tick
leaves as one batch, and the wait does not count as busy. A source fed from
outside (``tcp_ingest``) waits the same way for its input.

Rules kept: every wait is bounded and awake to control; per message, no more
than the protocol step and the loop; control is looked at every
``CONTROL_EVERY_S`` while a source or an inbox is busy, not on every buffer.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import zmq

from flowengine.core.loop import Outlet, SourceLoop
from flowengine.engine.wire.codec import checked_messages, message_of
from flowengine.engine.wire.protocol import RunEnd, SenderEnd, StreamCaps, StreamData, \
    StreamEnd
from flowengine.engine.worker.routing import StickyRouter
from flowengine.engine.worker.readiness import readable_check
from flowengine.errors import FlowError, WireError
from flowengine.ops.node import AGAIN, EOF
from flowengine.ops.pacing import waiting_with

__all__ = ["WireOutlet", "run_inbox", "run_source", "IDLE_WAIT_S", "START_WAIT_SECONDS"]

IDLE_WAIT_S = 0.1          # longest wait on the sockets (a live mixer's clock ticks that often)
START_WAIT_SECONDS = 60.0
_AGAIN_WAIT_S = 0.005      # a source with nothing ready (and no due time) is asked again after
# Plain ints: the flag enums cost more than the recv call.
_NOBLOCK = int(zmq.NOBLOCK)


class WireOutlet(Outlet):
    """The last stage loop's outlet in a worker: its outputs onto the wire (caps first, then
    data; eos at a stream's end), through the worker's send path."""

    def __init__(self, send: Any) -> None:
        self.send = send
        self._emit = send.emit

    def data(self, stream: str, bufs: list) -> None:
        emit = self._emit
        for buf in bufs:
            emit(stream, buf)

    def end(self, stream: str, aborted: bool = False) -> None:
        self.send.end_stream(stream, aborted)

    def close(self) -> None:
        """The worker sends its eof itself, once its loop is done (`Worker.run`)."""


# ------------------------------------------------------------------ a stage fed by an inbox

def run_inbox(worker: Any) -> None:
    """Receive until EOF came from every upstream sender; the loop then ends every stream
    still open (InboxState saw each one's eos already, unless the run was cut short)."""
    inbox = worker.inbox
    waits = worker.readable_poll(worker.inbox_fd)
    outboxes = list(worker.send.outboxes.values())
    clocked = worker.mix if worker.mix is not None and worker.mix.node.needs_clock else None
    fast = worker.inbox_state.next_data if worker.stage is not None and worker.merge is None \
        and worker.mix is None and worker.stamp is None else None
    inbox_fd, woken = worker.inbox_fd, False
    inbox_readable = readable_check(inbox)
    while not worker.inbox_state.run_ended:
        # Woken by the inbox's descriptor: try the recv at once (it reads the socket's
        # commands as a look at EVENTS would, and says Again when no message came).
        if woken or inbox_readable():
            woken = False
            parts = _receive(inbox)
            if parts is not None:
                _on_message(worker, parts, fast)
            worker.after_message()   # after the message: its counts are in the stats
        else:   # nothing to read (so the inbox's descriptor will say when there is)
            if outboxes and any(outbox.messages for outbox in outboxes):
                worker.send.flush_all()
            for fd, _ in worker.wait_readable(waits, IDLE_WAIT_S):
                if fd == inbox_fd:
                    woken = True
        if worker.resume_to:     # rare (a restart downstream): no call per turn for nothing
            worker.resume_replicas()
        if clocked is not None:     # a live mixer pads a late input after a wall-clock wait
            clocked.drain()
    if worker.mix is None:
        worker.stage.close()


def _receive(inbox: zmq.Socket) -> list[zmq.Frame] | None:
    """One multipart message from the inbox, whose EVENTS said it has one or whose
    descriptor woke the worker; None when it had not after all (a wake-up for ZeroMQ's
    own commands; seen over tcp while a peer connects, with zmq_poll). recv_multipart's
    flag enums cost more than the recv calls."""
    try:
        part = inbox.recv(_NOBLOCK, copy=False)
    except zmq.Again:
        return None
    parts = [part]
    while part.more:
        part = inbox.recv(_NOBLOCK, copy=False)
        parts.append(part)
    return parts


def _on_message(worker: Any, parts: list[zmq.Frame], fast: Any) -> None:
    """One received ZeroMQ message: a batch of wire messages or a single one, all checked
    first. `fast` is the inbox's fast path (`InboxState.next_data`) when the stage takes
    each buffer as it comes (no ordered merge, no mixer, no stamp), else None: the next
    data message of an open stream goes straight to the stage loop, without a Message or
    events; anything else through `InboxState.receive`."""
    try:
        messages = checked_messages(parts)
    except WireError as exc:
        spec = worker.spec
        raise WireError(f"stage {spec.stage!r} replica {spec.replica}: bad "
                        f"message on its inbox (fed by {', '.join(spec.upstream)}): "
                        f"{exc}") from None
    stage = worker.stage
    for header, payload, nbytes in messages:
        worker.received += 1
        worker.bytes_in += nbytes
        if fast is not None and type(header) is list:
            buffer = fast(header, payload, nbytes)
            if buffer is not None:
                stage.data(header[2], [buffer])
                continue
        # after the run's end, InboxState refuses more
        _on_wire_message(worker, message_of(header, payload, nbytes))


def _on_wire_message(worker: Any, message: Any) -> None:
    events = worker.inbox_state.receive(message)
    if worker.merge is not None:  # parts of streams spread over an ordered stage, in order
        events = worker.merge.receive(events, message.order, message.info.get("order_end"))
    if worker.mix is not None:
        for event in events:
            _on_mix_event(worker, event)
        return
    stage, stamp = worker.stage, worker.stamp
    for event in events:
        if isinstance(event, StreamData):
            if stamp is None:
                stage.data(event.stream, [event.buffer])
            else:   # one output per input, carrying the input's place in the stream
                stamp.take(event.stream, message.order, event.buffer)
                stage.data(event.stream, [event.buffer])
                stamp.done(event.stream)
        elif isinstance(event, StreamCaps):
            worker.origins.check(event.sender, event.stream)
            if event.stream not in stage.nodes:
                stage.open(event.stream)
        elif isinstance(event, StreamEnd):
            if stamp is not None:
                stamp.end(event.stream, message.info.get("order_end"))
            stage.end(event.stream, aborted=event.aborted)
        elif isinstance(event, RunEnd):
            break


def _on_mix_event(worker: Any, event: Any) -> None:
    """Every input into the mixer's one node, keyed by (upstream stage, stream id); an
    aborted input ends like any other, and the mix goes on."""
    feed = worker.mix_feed
    if isinstance(event, StreamData):
        worker.mix.data(feed.group(event.sender), event.stream, [event.buffer])
    elif isinstance(event, StreamEnd):
        worker.mix.end(feed.group(event.sender), event.stream)
    elif isinstance(event, SenderEnd):
        group = feed.sender_ended(event.sender)
        if group is not None:
            worker.mix.group_ended(group)


# ---------------------------------------------------------------------------- a source

def run_source(worker: Any) -> None:
    """Pull the source until it ends or the run drains; then every open stream ends."""
    if not worker.wait_control(START_WAIT_SECONDS):
        raise FlowError(f"worker {worker.id}: no start from the coordinator within "
                        f"{START_WAIT_SECONDS:.0f} s")
    send = worker.send
    node = worker.new_source()
    spec = worker.spec
    name = spec.chain[0].name if spec.chain else spec.stage
    loop = worker.source = SourceLoop(name, node, worker.source_outlet)
    # A multi-stream source before sticky replicas picks streams whose replica has room.
    ready = send.stream_has_room if hasattr(node, "pull_ready") and any(
        isinstance(router, StickyRouter) and router.replicas > 1 for router in send.routers) \
        else None
    try:
        with waiting_with(partial(_wait_in_source, worker, loop)):
            while not worker.draining:
                if time.monotonic() >= worker.next_control:   # (waits look at it anyway)
                    worker.service()
                if worker.resume_to:
                    worker.resume_replicas()
                out = loop.step(ready)
                if out is EOF:
                    break
                if out is AGAIN and not send.wait_for_full_replicas():
                    # nothing yet: wait a little, awake to control
                    worker.idle_until(time.monotonic() + _AGAIN_WAIT_S)
        loop.close()
    finally:
        node.close()


def _wait_in_source(worker: Any, loop: SourceLoop, deadline: float, fd: int | None) -> None:
    """A paced (or outside-fed) source's wait inside pull(): idle, and not counted as busy."""
    waited = time.perf_counter()
    worker.idle_until(deadline, fd)
    loop.busy -= time.perf_counter() - waited
