"""The broadcast hub: live streams in, one bounded queue per WebSocket client out.

Everything here runs on one asyncio loop and never awaits a client: the
ingest calls `start_stream` / `publish_frame` / `publish_clock` /
`end_stream`, which only append to the clients' queues, so a slow client
cannot slow the ingest or the other clients.

Each client has a `ClientQueue` bounded in frames. When a frame arrives at a
full queue the client skips ahead: every queued frame and clock stamp is
dropped (counted in `skipped_frames`), the last metadata stays, a `skip`
message tells the client, and the new frame is queued. Messages are whole
frames, so a client always resumes on a frame boundary; a late joiner gets
the stream's metadata and then the next frame. A client stuck in one send
for longer than the server's send timeout is dropped by the broadcast
(`drop_client`, counted in `dropped_clients`).

A client follows one stream by name, or (the default) the stream started
last: when that stream ends and another is live, or a new one starts, it
gets the new stream's metadata and plays on.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from flowengine.live.messages import DEFAULT_CLIENT_QUEUE_FRAMES, StreamInfo

__all__ = ["Hub", "LiveStream", "Client", "ClientQueue", "DEFAULT_CLIENT_QUEUE_FRAMES"]

log = logging.getLogger("flowengine.live")


def _text(message: dict) -> str:
    return json.dumps(message, separators=(",", ":"))


class ClientQueue:
    """A client's outgoing messages: bytes (frames) and str (JSON), at most `capacity` frames."""

    def __init__(self, capacity: int = DEFAULT_CLIENT_QUEUE_FRAMES) -> None:
        if capacity < 1:
            raise ValueError(f"client queue capacity must be at least 1 frame, got {capacity}")
        self.capacity = capacity
        self._items: deque[bytes | str] = deque()
        self._frames = 0
        self._ready = asyncio.Event()
        self.closed = False
        self.skipped_frames = 0
        self.skips = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def frames(self) -> int:
        return self._frames

    def put_text(self, message: dict, replaces_queue: bool = False) -> None:
        """Queue a JSON message; `replaces_queue` (a new stream's metadata) first drops what is
        queued of the old stream (those frames belong to a stream the client no longer plays)."""
        if self.closed:
            return
        if replaces_queue:
            self._items.clear()
            self._frames = 0
        self._items.append(_text(message))
        self._ready.set()

    def put_frame(self, frame: bytes) -> int:
        """Queue a frame; returns how many queued frames were skipped to make room (0 usually)."""
        if self.closed:
            return 0
        skipped = 0
        if self._frames >= self.capacity:
            skipped = self._skip_ahead()
        self._items.append(frame)
        self._frames += 1
        self._ready.set()
        return skipped

    def _skip_ahead(self) -> int:
        kept = [m for m in self._items if isinstance(m, str) and '"type":"metadata"' in m[:40]]
        skipped = self._frames
        self._items = deque(kept[-1:])
        self._frames = 0
        self.skipped_frames += skipped
        self.skips += 1
        self._items.append(_text({"type": "skip", "frames": skipped}))
        return skipped

    async def get(self) -> bytes | str | None:
        """The next message, waiting for one; None once the queue is closed."""
        while not self._items:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if isinstance(item, bytes):
            self._frames -= 1
        return item

    def close(self) -> None:
        self.closed = True
        self._items.clear()
        self._frames = 0
        self._ready.set()


@dataclass
class LiveStream:
    """One live stream as the hub sees it."""

    name: str
    info: StreamInfo
    generation: int
    sender: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    frames: int = 0
    bytes: int = 0
    last_clock: dict | None = None

    def metadata(self) -> dict:
        return self.info.metadata(stream=self.name, generation=self.generation)

    def stats(self) -> dict:
        return {**self.info.metadata(), "generation": self.generation, "frames": self.frames,
                "bytes": self.bytes, "started": self.started, "peer": self.sender.get("peer")}


@dataclass(eq=False)
class Client:
    """One WebSocket client: what it follows and its queue."""

    id: int
    want: str | None                 # a stream name, or None: the stream started last
    queue: ClientQueue
    peer: str = ""
    current: str | None = None       # the stream it gets now
    frames_sent: int = 0
    bytes_sent: int = 0


class Hub:
    """Live streams and their clients (see the module doc)."""

    def __init__(self, client_queue_frames: int = DEFAULT_CLIENT_QUEUE_FRAMES) -> None:
        self.client_queue_frames = client_queue_frames
        self.streams: dict[str, LiveStream] = {}
        self.clients: set[Client] = set()
        self._watchers: dict[str, set[Client]] = {}
        self._latest: str | None = None
        self._ids = itertools.count(1)
        self._generations = itertools.count(1)
        self.frames = 0
        self.bytes = 0
        self.skipped_frames = 0
        self.dropped_clients = 0
        self.streams_started = 0
        self.streams_ended = 0
        self.ingest_rejected = 0
        self.ingest_errors = 0

    # ---- streams (called by the ingest) -----------------------------------------------------

    def start_stream(self, name: str, info: StreamInfo, sender: dict | None = None) -> LiveStream:
        if name in self.streams:
            raise ValueError(f"stream {name!r} is already live")
        stream = LiveStream(name, info, next(self._generations), dict(sender or {}))
        self.streams[name] = stream
        self.streams_started += 1
        self._latest = name
        for client in list(self.clients):
            if client.want in (None, name):
                self._attach(client, name)
        return stream

    def publish_frame(self, name: str, frame: bytes) -> None:
        stream = self.streams[name]
        stream.frames += 1
        stream.bytes += len(frame)
        self.frames += 1
        self.bytes += len(frame)
        for client in self._watchers.get(name, ()):
            skipped = client.queue.put_frame(frame)
            if skipped:
                self.skipped_frames += skipped
                log.warning("client %d (%s) fell behind on stream %r: skipped %d frames ahead",
                            client.id, client.peer, name, skipped)

    def publish_clock(self, name: str, clock: dict) -> None:
        stream = self.streams[name]
        stream.last_clock = {**clock, "type": "clock", "server_time": time.time()}
        for client in self._watchers.get(name, ()):
            client.queue.put_text(stream.last_clock)

    def end_stream(self, name: str, reason: str) -> None:
        stream = self.streams.pop(name, None)
        if stream is None:
            return
        self.streams_ended += 1
        watchers = self._watchers.pop(name, set())
        for client in watchers:
            client.current = None
            client.queue.put_text({"type": "end", "stream": name, "reason": reason})
        if self._latest == name:
            live = sorted(self.streams.values(), key=lambda s: s.generation)
            self._latest = live[-1].name if live else None
            if self._latest is not None:
                for client in watchers:
                    if client.want is None:
                        self._attach(client, self._latest)

    # ---- clients (called by the broadcast) --------------------------------------------------

    def add_client(self, want: str | None = None, peer: str = "") -> Client:
        client = Client(next(self._ids), want, ClientQueue(self.client_queue_frames), peer)
        self.clients.add(client)
        target = want if want is not None else self._latest
        if target is not None and target in self.streams:
            self._attach(client, target)
        return client

    def remove_client(self, client: Client) -> None:
        self.clients.discard(client)
        if client.current is not None:
            self._watchers.get(client.current, set()).discard(client)
        client.queue.close()

    def drop_client(self, client: Client, reason: str) -> None:
        """Remove a client that stopped reading (counted)."""
        if client in self.clients:
            self.dropped_clients += 1
            log.warning("dropping client %d (%s): %s", client.id, client.peer, reason)
        self.remove_client(client)

    def _attach(self, client: Client, name: str) -> None:
        if client.current is not None:
            self._watchers.get(client.current, set()).discard(client)
        client.current = name
        self._watchers.setdefault(name, set()).add(client)
        stream = self.streams[name]
        client.queue.put_text(stream.metadata(), replaces_queue=True)

    # ---- stats ------------------------------------------------------------------------------

    def stats(self) -> dict:
        """The /stats document: totals, streams and clients. `drops` counts frames left out for
        slow clients (skipped ahead), `dropped_clients` the clients closed for not reading."""
        return {
            "clients": len(self.clients), "frames": self.frames, "bytes": self.bytes,
            "drops": self.skipped_frames,
            "dropped_clients": self.dropped_clients, "skipped_frames": self.skipped_frames,
            "streams_started": self.streams_started, "streams_ended": self.streams_ended,
            "ingest_rejected": self.ingest_rejected, "ingest_errors": self.ingest_errors,
            "streams": {name: s.stats() for name, s in self.streams.items()},
            "client_list": [
                {"id": c.id, "peer": c.peer, "stream": c.current, "queued": len(c.queue),
                 "frames_sent": c.frames_sent, "bytes_sent": c.bytes_sent,
                 "skipped_frames": c.queue.skipped_frames, "skips": c.queue.skips}
                for c in sorted(self.clients, key=lambda c: c.id)],
        }
