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
"""

from __future__ import annotations

from typing import Any

from .routing import StickyRouter
from .wire import encode_eof

__all__ = ["resume_downstream"]


def resume_downstream(worker: Any, target: str) -> None:
    """Caps of `worker`'s open streams routed to replica `target` ("stage:replica"), then its
    eof when it was sent before; `worker` is a ``worker.Worker``."""
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
