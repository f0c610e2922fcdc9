"""The loop of a worker fed by an inbox: messages in, through the stream's node, out.

Theory of operation
-------------------
One ZeroMQ message (a batch) per turn, each turn one poll of the control
socket and the inbox: without waiting while the worker has messages queued
to send (a look whether more input is there to batch with), else up to
``IDLE_WAIT_S``. Nothing more to read now: the queued messages go out, then
the worker waits. Control is answered after the message, so its counts are
in the stats.

Each wire message goes through the worker's ``InboxState`` (the per-edge
protocol; an ordered stage's parts merged back in order first), then: caps
make the stream's node, data is pushed into it and whatever it gives is
sent on (``SendPath.emit``), eos flushes the node (``push(None)``, pull to
EOF), sends eos on and drops the node. An *aborted* eos (the stream was cut
short after an error upstream, ``on_error: skip``) closes the node without
flushing it, so nothing finalizes a partial stream (a file sink keeps
``NAME.part``, what an encoder held is dropped), marks the stream
``aborted`` in the stage's counts (the audit says skipped) and sends the
aborted eos on. A multi-input stage (a mixer) has one node for every input
instead (``fanin.MultiInputFeed``); there an aborted input ends like any
other, and the mix goes on.

Rules kept: every wait is bounded and awake to control; per message, no
more than the protocol step, the counts and the node (the functions here
take the worker and read its attributes directly, no layers in between).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import zmq

from flowengine.errors import CodecError, FlowError, WireError
from flowengine.ops.node import Node
from flowengine.ops.node import pull_outputs
from flowengine.engine.wire.protocol import RunEnd, SenderEnd, StreamCaps, StreamData, StreamEnd
from flowengine.engine.wire.codec import decode_batch

if TYPE_CHECKING:
    from flowengine.engine.worker.main import Worker

__all__ = ["run_inbox", "IDLE_WAIT_S"]

IDLE_WAIT_S = 0.1          # longest wait on the sockets (a live mixer's clock ticks that often)
_NOBLOCK = int(zmq.NOBLOCK)   # a plain int: the flag enum costs more than the recv call


def run_inbox(worker: Worker) -> None:
    """Receive until EOF came from every upstream sender, then flush what is left open."""
    poller = zmq.Poller()
    poller.register(worker.control, zmq.POLLIN)
    poller.register(worker.inbox, zmq.POLLIN)
    outboxes = worker.send.outboxes
    while not worker.inbox_state.run_ended:
        queued = any(len(outbox) for outbox in outboxes.values())
        ready = worker.poll(poller, 0.0 if queued else IDLE_WAIT_S)
        frames = _receive(worker.inbox) if any(s is worker.inbox for s, _ in ready) else None
        if frames is not None:
            _on_message(worker, frames)
        elif queued:
            worker.send.flush_all()
        worker.answer(ready)   # after the message: its counts are in the stats
        worker.resume_replicas()
        _tick_multi_input(worker)
    for stream in list(worker.nodes):  # InboxState saw every eos already; none left open
        _flush_stream(worker, stream)
    if worker.multi is not None:
        _flush_multi_input(worker)


def _receive(inbox: zmq.Socket) -> list[zmq.Frame] | None:
    """One multipart message from the inbox, which poll said has one; None when it had
    not after all (seen over tcp while a peer connects). recv_multipart's flag enums
    cost more than the recv calls."""
    try:
        frame = inbox.recv(_NOBLOCK, copy=False)
    except zmq.Again:
        return None
    frames = [frame]
    while frame.more:
        frame = inbox.recv(_NOBLOCK, copy=False)
        frames.append(frame)
    return frames


def _on_message(worker: Worker, frames: list[zmq.Frame]) -> None:
    """One received ZeroMQ message: a batch of wire messages or a single one."""
    try:
        messages = decode_batch(frames)
    except WireError as exc:
        spec = worker.spec
        raise WireError(f"stage {spec.stage!r} replica {spec.replica}: bad "
                        f"message on its inbox (fed by {', '.join(spec.upstream)}): "
                        f"{exc}") from None
    for message in messages:
        worker.received += 1
        _on_wire_message(worker, message)  # after the run's end, InboxState refuses more


def _on_wire_message(worker: Worker, message: Any) -> None:
    events = worker.inbox_state.receive(message)
    if worker.merge is not None:  # parts of streams spread over an ordered stage, in order
        events = worker.merge.receive(events, message.order, message.info.get("order_end"))
    for event in events:
        if worker.multi is not None:
            _on_multi_input_event(worker, event, message.nbytes)
            continue
        if isinstance(event, StreamData):
            worker.count(event.stream, "in", event.buffer)
            worker.counts_in.add(event.buffer, message.nbytes)
            if worker.stamp is not None:
                worker.stamp.take(event.stream, message.order, event.buffer)
            _on_data(worker, event.stream, event.buffer)
            if worker.stamp is not None:
                worker.stamp.done(event.stream)
        elif isinstance(event, StreamCaps):
            worker.origins.check(event.sender, event.stream)
            if event.stream not in worker.nodes:
                worker.nodes[event.stream] = worker.new_node()
        elif isinstance(event, StreamEnd):
            if worker.stamp is not None:
                worker.stamp.end(event.stream, message.info.get("order_end"))
            if event.aborted:
                _abort_stream(worker, event.stream)
            else:
                _flush_stream(worker, event.stream)
        elif isinstance(event, RunEnd):
            break


# ------------------------------------------------------------------- nodes

def _drain_node(worker: Worker, stream: str, node: Node, flushing: bool) -> None:
    """Pull `node` until AGAIN (or EOF once flushing), sending what it gives."""
    start = time.perf_counter()
    for out in pull_outputs(node, flushing, f"stage {worker.spec.stage!r} stream {stream!r}"):
        worker.busy += time.perf_counter() - start
        if worker.edges:
            worker.send.emit(stream, out, node)
        else:   # no stage reads this one: dropped, as the in-process runner's null sink drops it
            worker.send.count_unsent(stream, out, node)
        start = time.perf_counter()
    worker.busy += time.perf_counter() - start


def _push(worker: Worker, stream: str, node: Node, buf: Any) -> None:
    start = time.perf_counter()
    node.push(buf)
    worker.busy += time.perf_counter() - start
    _drain_node(worker, stream, node, flushing=buf is None)


def _flush_stream(worker: Worker, stream: str) -> None:
    node = worker.nodes.pop(stream)
    try:
        _push(worker, stream, node, None)
    finally:
        node.close()
    worker.send.end_stream(stream)


def _abort_stream(worker: Worker, stream: str) -> None:
    """Cut short upstream: close the node unflushed, count the stream aborted, pass it on."""
    worker.nodes.pop(stream).close()
    worker.tally.counts_for(stream)["aborted"] = 1
    worker.send.end_stream(stream, aborted=True)


def _on_data(worker: Worker, stream: str, buf: Any) -> None:
    node = worker.nodes[stream]
    try:
        _push(worker, stream, node, buf)
    except (CodecError, WireError) as exc:
        spec = worker.spec
        if spec.on_error != "skip":
            raise
        worker.errors_skipped += 1
        counts = worker.tally.counts_for(stream)   # the audit reports the stream as skipped
        counts["errors"] = counts.get("errors", 0) + 1
        limit = spec.max_errors
        if limit is not None and worker.errors_skipped > limit:
            raise FlowError(f"stage {spec.stage!r} stream {stream!r}: "
                            f"{worker.errors_skipped} errors skipped, over max_errors={limit}; "
                            f"last: {exc}") from exc


# ----------------------------------------------------------- multi-input

def _on_multi_input_event(worker: Worker, event: Any, nbytes: int) -> None:
    """Every input stream into the one node, keyed by (upstream stage, stream id)."""
    multi = worker.multi
    start = time.perf_counter()
    if isinstance(event, StreamData):
        worker.count(event.stream, "in", event.buffer)
        worker.counts_in.add(event.buffer, nbytes)
        multi.data(event.sender, event.stream, event.buffer)
    elif isinstance(event, StreamEnd):   # aborted or not: that input ended, the mix goes on
        multi.end(event.sender, event.stream)
    elif isinstance(event, SenderEnd):
        multi.sender_ended(event.sender)
    else:
        return
    worker.busy += time.perf_counter() - start
    _drain_node(worker, multi.stream, multi.node, flushing=False)


def _tick_multi_input(worker: Worker) -> None:
    """A live mixer pads a late input after a wall-clock wait: give it a chance to."""
    multi = worker.multi
    if multi is not None and multi.node.needs_clock:
        _drain_node(worker, multi.stream, multi.node, flushing=False)


def _flush_multi_input(worker: Worker) -> None:
    multi = worker.multi
    try:
        _push(worker, multi.stream, multi.node, None)
    finally:
        multi.node.close()
    worker.send.end_stream(multi.stream)
