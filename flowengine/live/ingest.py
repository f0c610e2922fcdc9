"""TCP ingest: senders push length-prefixed frames (framing.py), each connection one live stream.

One asyncio task per connection reads at most `READ_BYTES` at a time into a
FrameDecoder and acts on its events. The first frame is the shared-secret
token when the server has one; JSON control frames (protocol.py) name the
stream (`hello`) and stamp frames with the sender's clock (`clock`); audio
frames must carry a valid MP3 or ADTS header (the first one tells the
codec, rate and channels of the stream). A zero-length frame ends the
stream; frames after it start the stream again (a new generation).

Bad input never stops the server: an oversize frame, bytes that are not
frames (garbage), a wrong token, a sender silent for `idle_timeout` seconds or one that disconnects
mid-frame -- each closes that connection only, with one log line, and ends
its stream. Memory per connection is bounded by one frame plus one read.

A connection that starts a stream whose name is live waits up to
`takeover_grace` seconds for the old one to end it (a clean restart whose
old connection is still being read), then takes it over: the old
connection is closed and the stream restarts (new metadata). That is how a
sender that reconnects recovers while the server still holds its half-dead
old connection (and why a token matters on an open network).

The ingest hands streams to an `IngestTarget` (the broadcast hub, or the
tcp_ingest source operator's queue), whose `frame()` may wait: that is
backpressure on that one sender's TCP connection.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
from dataclasses import dataclass
from typing import Protocol

from flowengine.errors import WireError
from flowengine.live.framing import CLOSED, DEFAULT_MAX_FRAME_BYTES, END_OF_STREAM, NEED_DATA, FrameDecoder
from flowengine.live.messages import StreamInfo, is_control_frame, is_frame_of, parse_control, probe_frame

__all__ = ["IngestTarget", "IngestConfig", "IngestServer", "READ_BYTES"]

log = logging.getLogger("flowengine.live")

READ_BYTES = 1 << 16


class IngestTarget(Protocol):
    """Where the ingest delivers streams."""

    async def start(self, name: str, info: StreamInfo, sender: dict) -> None: ...
    async def frame(self, name: str, data: bytes) -> None: ...
    async def clock(self, name: str, clock: dict) -> None: ...
    async def end(self, name: str, reason: str) -> None: ...
    def count(self, what: str) -> None: ...     # "rejected" (token, name) | "errors" (bad input)


@dataclass
class IngestConfig:
    host: str = "127.0.0.1"
    port: int = 23457
    token: str | None = None
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    idle_timeout: float = 30.0
    max_connections: int = 64
    takeover_grace: float = 2.0


class _Rejected(Exception):
    """This connection is refused (token, name); counted as rejected, not as bad input."""


class IngestServer:
    """The TCP ingest listener. `await start()` binds (port 0: any free port, see `.port`)."""

    def __init__(self, target: IngestTarget, config: IngestConfig | None = None) -> None:
        self.target = target
        self.config = config or IngestConfig()
        self.port: int | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._numbers = itertools.count(1)
        self._owners: dict[str, _Connection] = {}

    async def start(self) -> None:
        cfg = self.config
        self._server = await asyncio.start_server(self._on_connection, cfg.host, cfg.port,
                                                  limit=READ_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("ingest listening on tcp://%s:%d%s", cfg.host, self.port,
                 " (token required)" if cfg.token else "")

    async def stop(self) -> None:
        """Stop listening and close every sender's connection (their streams end)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in list(self._writers):
            writer.transport.abort()        # their reads end: each task finishes by itself
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        for task in list(self._tasks):
            task.cancel()

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self._writers.add(writer)
        host, port = writer.get_extra_info("peername")[:2]
        peer = f"{host}:{port}"
        try:
            if len(self._tasks) > self.config.max_connections:
                self.target.count("rejected")
                log.warning("ingest %s: refused, already %d connections (max_connections)",
                            peer, self.config.max_connections)
                return
            await _Connection(self, peer, next(self._numbers), writer).run(reader)
        except asyncio.CancelledError:     # stop() after its grace: asyncio would log it as an error
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (OSError, asyncio.TimeoutError):
                pass


class _Connection:
    """One sender's connection: the framing decoder, the token, its current stream."""

    def __init__(self, server: IngestServer, peer: str, number: int,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.writer = writer
        self.superseded = False                  # its stream was taken over: stop reading
        self.ended = asyncio.Event()             # set whenever it has no live stream
        self.target = server.target
        self.cfg = server.config
        self.peer = peer
        self.where = f"ingest {peer}"
        self.default_name = f"ingest-{number}"
        self.decoder = FrameDecoder(self.cfg.max_frame_bytes, self.where)
        self.authorised = self.cfg.token is None
        self.hello: dict = {}
        self.stream: str | None = None
        self.codec: str | None = None
        self.early_clock: dict | None = None     # a stamp of the frame that starts the stream
        self.ended.set()

    async def run(self, reader: asyncio.StreamReader) -> None:
        log.info("%s: connected", self.where)
        reason = "sender disconnected"
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(READ_BYTES), self.cfg.idle_timeout)
                except asyncio.TimeoutError:
                    raise WireError(f"{self.where}: no data for {self.cfg.idle_timeout:g} s "
                                    f"(idle_timeout): closing") from None
                if self.superseded:
                    break
                self.decoder.receive_data(data)
                if await self._drain_events():
                    break
        except _Rejected as exc:
            self.target.count("rejected")
            reason = str(exc)
            log.warning("%s", exc)
        except WireError as exc:
            self.target.count("errors")
            reason = str(exc)
            log.warning("%s (%d frames, %d bytes received before)", exc, self.decoder.frames,
                        self.decoder.offset)
        except ConnectionError as exc:
            reason = f"{self.where}: connection error: {exc}"
            log.warning("%s", reason)
        finally:
            await self._end_stream(reason)
            log.info("%s: closed", self.where)

    async def _drain_events(self) -> bool:
        """Handle every complete event; True once the peer closed."""
        while (event := self.decoder.next_event()) is not NEED_DATA:
            if event is CLOSED or self.superseded:
                return True
            if event is END_OF_STREAM:
                await self._end_stream("end of stream")
            else:
                await self._on_frame(event)
        return False

    async def _on_frame(self, data: bytes) -> None:
        if not self.authorised:
            if not hmac.compare_digest(data, self.cfg.token.encode("utf-8")):
                raise _Rejected(f"{self.where}: rejected: the first frame is not the token")
            self.authorised = True
            return
        if is_control_frame(data):
            await self._on_control(parse_control(data, self.where))
            return
        if self.stream is None:
            await self._start_stream(data)
            if self.early_clock is not None:
                await self.target.clock(self.stream, self.early_clock)
                self.early_clock = None
        elif not is_frame_of(self.codec, data):
            raise WireError(f"{self.where}: frame {self.decoder.frames} at byte offset "
                            f"{self.decoder.offset - len(data)} of stream {self.stream!r} is not "
                            f"a {self.codec} frame (starts with {data[:4].hex()})")
        await self.target.frame(self.stream, data)

    async def _on_control(self, message: dict) -> None:
        if message["type"] == "hello":
            if self.stream is not None:
                raise WireError(f"{self.where}: hello in the middle of stream {self.stream!r} "
                                f"(send it before the first frame)")
            self.hello = message
        elif self.stream is None:
            self.early_clock = message
        else:
            await self.target.clock(self.stream, message)

    async def _start_stream(self, first: bytes) -> None:
        info = probe_frame(first)
        if info is None:
            raise WireError(f"{self.where}: the first frame ({len(first)} bytes at byte offset "
                            f"{self.decoder.offset - len(first)}) is neither an MP3 nor an ADTS "
                            f"AAC frame nor a JSON control frame (starts with {first[:4].hex()})"
                            + ("; was a token sent to a server without one?"
                               if self.cfg.token is None else ""))
        declared = self.hello.get("codec")
        if declared is not None and declared != info.codec:
            raise WireError(f"{self.where}: hello declares codec {declared!r} but the first "
                            f"frame is {info.codec}")
        name = self.hello.get("stream") or self.default_name
        previous = self.server._owners.get(name)
        if previous is not None:
            try:
                await asyncio.wait_for(previous.ended.wait(), self.cfg.takeover_grace)
            except asyncio.TimeoutError:
                pass
            if self.server._owners.get(name) is previous:
                await previous._hand_over(self)
        self.server._owners[name] = self
        self.stream, self.codec = name, info.codec
        self.ended.clear()
        info = info.with_hello(self.hello)
        await self.target.start(name, info, {"peer": self.peer})
        log.info("%s: stream %r started: %s %d Hz %d ch, %d samples/frame", self.where, name,
                 info.codec, info.sample_rate, info.channels, info.chunk_samples)

    async def _hand_over(self, successor: "_Connection") -> None:
        """Another connection takes this one's stream: end it and close this connection."""
        reason = f"taken over by {successor.where}"
        log.warning("%s: stream %r %s", self.where, self.stream, reason)
        await self._end_stream(reason)
        self.superseded = True
        self.writer.transport.abort()

    async def _end_stream(self, reason: str) -> None:
        if self.stream is None:
            return
        name, self.stream = self.stream, None
        if self.server._owners.get(name) is self:
            del self.server._owners[name]
        self.ended.set()
        await self.target.end(name, reason)
        log.info("%s: stream %r ended: %s", self.where, name, reason)
