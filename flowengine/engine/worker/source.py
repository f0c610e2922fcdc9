"""The loop of a source worker (no inbox): pull buffers from its node and send them on.

Theory of operation
-------------------
A source is one node whose buffers may belong to several streams. The
worker waits for the coordinator's ``start``, then pulls until the node
ends or the coordinator says ``drain``; when it ends every open stream gets
its eos. A multi-stream source reports each stream's end as it happens
(``take_ended_streams``) and that stream's eos goes out at once, so its
files close early.

Before sticky replicas (``SendPath.stream_has_room``) the source gives
buffers of streams whose replica has room (``pull_ready``); only when no
open stream has room does the worker wait, one bounded slice awake to
control, for room on the full sockets. A source with nothing ready waits a
little (``_AGAIN_WAIT_S``) and asks again. A paced (live) source waits for
its next tick through ``Worker.idle_until`` (``flowengine.ops.pacing``): what it
made for the tick leaves as one batch, and the wait does not count as busy.
A source fed from outside (``tcp_ingest``) waits the same way for its input
(``pacing.wait_readable``), until its feeding thread signals a descriptor:
what it gave so far goes out first, not behind the next arrival.

Rules kept: never wait on a full replica while another stream has room;
every wait is bounded and awake to control; control is looked at every
``CONTROL_EVERY_S`` while busy, not on every buffer.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from flowengine.errors import FlowError
from flowengine.ops.node import AGAIN, EOF, Node
from flowengine.ops.streams import take_ended_streams
from flowengine.ops.pacing import waiting_with
from flowengine.engine.worker.counters import rate_of
from flowengine.engine.worker.routing import StickyRouter

if TYPE_CHECKING:
    from flowengine.engine.worker.main import Worker

__all__ = ["run_source", "START_WAIT_SECONDS"]

START_WAIT_SECONDS = 60.0
_AGAIN_WAIT_S = 0.005      # a source with nothing ready (and no due time) is asked again after


def run_source(worker: Worker) -> None:
    """Pull the source until it ends or the run drains; then every open stream ends."""
    if not worker.wait_control(START_WAIT_SECONDS):
        raise FlowError(f"worker {worker.id}: no start from the coordinator within "
                        f"{START_WAIT_SECONDS:.0f} s")
    send = worker.send
    node = worker.new_node()
    # A multi-stream source before sticky replicas picks streams whose replica has room.
    picks_streams = hasattr(node, "pull_ready") and any(
        isinstance(router, StickyRouter) and router.replicas > 1 for router in send.routers)
    try:
        with waiting_with(lambda deadline, fd: _wait_in_source(worker, deadline, fd)):
            while not worker.draining:
                if time.monotonic() >= worker.next_control:   # (waits look at it anyway)
                    worker.service()
                worker.resume_replicas()
                start = time.perf_counter()
                out = node.pull_ready(send.stream_has_room) if picks_streams else node.pull()
                worker.busy += time.perf_counter() - start
                if out is EOF:
                    break
                if out is AGAIN:
                    _end_source_streams(worker, node)  # ended meanwhile: end now, not later
                    if not send.wait_for_full_replicas():
                        # nothing yet: wait a little, awake to control
                        worker.idle_until(time.monotonic() + _AGAIN_WAIT_S)
                    continue
                worker.count(out.stream, "in", out, rate_of(node))
                send.emit(out.stream, out, node)
                _end_source_streams(worker, node)
            _end_source_streams(worker, node)
    finally:
        node.close()
    for stream in worker.sender.open_streams:
        send.end_stream(stream)


def _wait_in_source(worker: Worker, deadline: float, fd: int | None) -> None:
    """A paced (or outside-fed) source's wait inside pull(): idle, and not counted as busy."""
    waited = time.perf_counter()
    worker.idle_until(deadline, fd)
    worker.busy -= time.perf_counter() - waited


def _end_source_streams(worker: Worker, node: Node) -> None:
    """End at once the streams a multi-stream source finished (their files close early);
    a stream it skipped after an error is counted, with errors=1 in its stream counts, and
    ends aborted: downstream closes it without finalizing (its file stays NAME.part)."""
    for end in take_ended_streams(node):
        if end.error is not None:
            worker.errors_skipped += 1
            worker.tally.counts_for(end.stream)["errors"] = 1
        worker.send.end_stream(end.stream, aborted=end.error is not None)
