"""The live pieces as pipeline nodes: a TCP ingest source and a WebSocket broadcast sink.

`IngestSourceNode` runs an IngestServer on its own loop thread and hands out
every received frame as a Packet (codec, stream = the ingest's stream name,
pts counted in samples per stream). Its queue is bounded: when the pipeline
is slower than the senders, the ingest stops reading their sockets (TCP
backpressure) instead of growing. pull() waits at most `poll_seconds` and
answers AGAIN when nothing came; the node ends (EOF) after `streams` streams
have ended, or never when `streams` is None. It waits through
``pacing.wait_readable`` on a pipe the loop thread writes a byte to for each
queued item: in a worker the packets it gave so far are sent before it waits,
and the wait ends as soon as the next one is queued.

`BroadcastSinkNode` runs a LiveServer without ingest and publishes the
packets pushed into it (mp3 or aac), one live stream per packet stream id,
optionally paced at real time (for sources that are not live, like files).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import time

from flowengine.audio.buffers import PACKET_FLAG_KEY, Packet
from flowengine.errors import FormatError
from flowengine.ops.node import PACKET
from flowengine.ops.flownode import FlowNode
from flowengine.ops.pacing import wait_readable
from flowengine.live.ingest import IngestConfig, IngestServer
from flowengine.live.messages import LIVE_CODECS, StreamInfo, probe_frame
from flowengine.live.sender import Pacer, packet_seconds
from flowengine.live.server import LiveConfig, LiveServerThread, LoopThread

__all__ = ["IngestSourceNode", "BroadcastSinkNode"]

log = logging.getLogger("flowengine.live")

_STREAMS_DONE = object()
# How often a full queue is retried while the ingest holds back its sender.
_BACKPRESSURE_POLL = 0.005


class _QueueTarget:
    """The ingest's target inside IngestSourceNode: frames become Packets in a bounded queue."""

    def __init__(self, size: int, streams: int | None) -> None:
        self.queue: queue.Queue = queue.Queue(size)
        # One byte per queued item wakes a reader waiting on `wakeup_fd` (non-blocking both
        # ends: a full pipe already says "readable", an empty one reads nothing).
        self.wakeup_fd, self._wakeup_write = os.pipe()
        os.set_blocking(self.wakeup_fd, False)
        os.set_blocking(self._wakeup_write, False)
        self.streams = streams
        self.live: dict[str, tuple[StreamInfo, list[int]]] = {}
        self.ended = 0
        self.rejected = 0
        self.errors = 0

    async def start(self, name: str, info: StreamInfo, sender: dict) -> None:
        self.live[name] = (info, [0])

    async def frame(self, name: str, data: bytes) -> None:
        info, pts = self.live[name]
        packet = Packet(data, 1, info.sample_rate, pts[0], pts[0], info.chunk_samples,
                        PACKET_FLAG_KEY, info.codec, name)
        pts[0] += info.chunk_samples
        await self._put(packet)

    async def clock(self, name: str, clock: dict) -> None:
        """Clock stamps are for players; a pipeline has no use for them."""

    async def end(self, name: str, reason: str) -> None:
        self.live.pop(name, None)
        self.ended += 1
        if self.streams is not None and self.ended == self.streams:
            await self._put(_STREAMS_DONE)

    def count(self, what: str) -> None:
        if what == "rejected":
            self.rejected += 1
        else:
            self.errors += 1

    async def _put(self, item) -> None:
        while True:
            try:
                self.queue.put_nowait(item)
            except queue.Full:
                await asyncio.sleep(_BACKPRESSURE_POLL)
                continue
            with contextlib.suppress(BlockingIOError):
                os.write(self._wakeup_write, b"\0")
            return

    def get(self, timeout: float):
        """The next queued item, waiting at most `timeout` (pacing.wait_readable); None when
        nothing came. The pipe is emptied before the queue is looked at again, so a byte
        written after that look (a new item) ends the wait."""
        item = self._take()
        if item is None:
            with contextlib.suppress(BlockingIOError):
                os.read(self.wakeup_fd, 4096)
            item = self._take()
        if item is None:
            wait_readable(self.wakeup_fd, timeout)
            item = self._take()
        return item

    def _take(self):
        """The next queued item, or None (None itself is never queued)."""
        try:
            return self.queue.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        """Close the wake-up pipe (once; after the loop thread has stopped)."""
        for fd in (self.wakeup_fd, self._wakeup_write):
            if fd >= 0:
                os.close(fd)
        self.wakeup_fd = self._wakeup_write = -1


class IngestSourceNode(FlowNode):
    """A TCP ingest as a packet source (see the module doc)."""

    def __init__(self, config: IngestConfig | None = None, streams: int | None = None,
                 queue_packets: int = 256, poll_seconds: float = 0.05) -> None:
        super().__init__("tcp_ingest", None, PACKET)
        self.config = config or IngestConfig()
        self.poll_seconds = poll_seconds
        self._target = _QueueTarget(queue_packets, streams)
        self._server = IngestServer(self._target, self.config)
        self._thread: LoopThread | None = None

    @property
    def port(self) -> int | None:
        """The bound port (after the first pull or start())."""
        return self._server.port

    def start(self) -> None:
        """Bind and listen (the first pull does it when not called)."""
        if self._thread is None:
            self._thread = LoopThread("flowengine-ingest")
            self._thread.start_loop()
            self._thread.run(self._server.start())

    def _produce(self) -> Packet | None:
        if self._ended:
            return None
        self.start()
        item = self._target.get(self.poll_seconds)
        if item is None:
            return None
        if item is _STREAMS_DONE:
            self._ended = True
            return None
        return item

    def stats(self) -> dict[str, int | float]:
        return {**super().stats(), "errors": self._target.errors + self._target.rejected}

    def close(self) -> None:
        if self._thread is not None:
            self._thread.stop_loop(self._server.stop())
            self._thread = None
        self._target.close()


class BroadcastSinkNode(FlowNode):
    """Packets to WebSocket clients through a LiveServer (see the module doc)."""

    def __init__(self, config: LiveConfig | None = None, realtime: bool = False,
                 linger_seconds: float = 0.0) -> None:
        super().__init__("ws_broadcast", PACKET, None)
        self.config = config or LiveConfig()
        self.config.ingest_port = None
        self.realtime = realtime
        self.linger_seconds = linger_seconds
        self._server: LiveServerThread | None = None
        self._pacers: dict[str, tuple[Pacer, list[float]]] = {}

    @property
    def server(self) -> LiveServerThread:
        """The running server (started at the first packet, or by start())."""
        return self.start()

    def start(self) -> LiveServerThread:
        if self._server is None:
            self._server = LiveServerThread(self.config).start()
        return self._server

    def _accept(self, packet: Packet) -> None:
        server = self.start()
        if packet.stream not in self._pacers:
            if packet.codec not in LIVE_CODECS:
                raise FormatError(f"ws_broadcast: stream {packet.stream!r}: browsers get "
                                  f"{' or '.join(LIVE_CODECS)} packets, got {packet.codec!r}")
            info = probe_frame(packet.data)
            if info is None or info.codec != packet.codec:
                raise FormatError(f"ws_broadcast: stream {packet.stream!r}: the first packet "
                                  f"is not a valid {packet.codec} frame")
            server.call(server.hub.start_stream, packet.stream, info, {"peer": "pipeline"})
            self._pacers[packet.stream] = (Pacer(), [0.0])
        pacer, media = self._pacers[packet.stream]
        if self.realtime:
            pacer.wait(media[0])
        media[0] += packet_seconds(packet)
        server.call_soon(server.hub.publish_frame, packet.stream, packet.data)

    def _finish(self) -> None:
        if self._server is None:
            return
        for name in self._pacers:
            self._server.call(self._server.hub.end_stream, name, "end of input")
        if self.linger_seconds > 0:
            time.sleep(self.linger_seconds)

    def _produce(self) -> None:
        return None

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
