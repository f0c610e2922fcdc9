"""The sending side: a paced TCP push sink, and `run_sender` (`flowengine send`).

`TcpPushSink` is a packet sink (push(packet), finalize()) that sends every
MP3/ADTS packet to an ingest through a PushClient, one connection per
stream, optionally paced at real time: a packet leaves when its start on the
stream's media clock is due on the wall clock (`Pacer`, scheduled from the
first packet, so late wake-ups never accumulate drift). Every `clock_every`
frames it sends a clock stamp first (protocol.py), for latency figures.

`run_sender` is the original example's `sender` mode built from flowengine
parts: a source (any file PyAV reads, converted to the wanted rate and
channels, or a generated tone) -> an MP3 or AAC encoder -> TcpPushSink, run
by the in-process Runner.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from flowengine.audio.buffers import AudioFrame, Packet
from flowengine.errors import ConfigError, FormatError
from flowengine.audio.format import AudioFormat
from flowengine.ops.node import PACKET
from flowengine.ops.adapters import make_encoder_node
from flowengine.local.runner import Runner, RunStats
from flowengine.live.messages import LIVE_CODECS, hello_message, probe_frame
from flowengine.live.push import PushClient

__all__ = ["Pacer", "TcpPushSink", "packet_seconds", "SenderOptions", "build_sender", "run_sender"]

log = logging.getLogger("flowengine.live")


class Pacer:
    """Sleeps until a media time (seconds from the first wait) is due on the wall clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._clock, self._sleep = clock, sleep
        self._start: float | None = None

    def wait(self, media_seconds: float) -> None:
        now = self._clock()
        if self._start is None:
            self._start = now - media_seconds
        delay = self._start + media_seconds - now
        if delay > 0:
            self._sleep(delay)


@dataclass
class _PushedStream:
    client: PushClient
    pacer: Pacer = field(default_factory=Pacer)
    frames: int = 0
    media_seconds: float = 0.0


class TcpPushSink:
    """Packets (mp3 or aac) to a TCP ingest, one connection per stream (see the module doc).

    stream: the name the ingest gives the stream; "{stream}" in it is replaced
    by the packets' stream id; None lets the server name it.
    """

    name = "tcp_push"
    input_kind = PACKET

    def __init__(self, host: str = "127.0.0.1", port: int = 23457, token: str | None = None,
                 stream: str | None = None, realtime: bool = True, clock_every: int = 10,
                 bitrate: int | None = None, retry_seconds: float = 30.0,
                 timeout: float = 5.0) -> None:
        if isinstance(clock_every, bool) or not isinstance(clock_every, int) or clock_every < 0:
            raise ConfigError(f"tcp_push: clock_every must be an integer >= 0 (0: no clock "
                              f"stamps), got {clock_every!r}")
        self.host, self.port, self.token = host, port, token
        self.stream = stream
        self.realtime = realtime
        self.clock_every = clock_every
        self.bitrate = bitrate
        self.retry_seconds, self.timeout = retry_seconds, timeout
        self._streams: dict[str, _PushedStream] = {}

    def push(self, packet: Packet) -> None:
        if packet.codec not in LIVE_CODECS:
            raise FormatError(f"tcp_push: stream {packet.stream!r}: the live ingest takes "
                              f"{' or '.join(LIVE_CODECS)} packets, got {packet.codec!r}")
        state = self._streams.get(packet.stream) or self._open(packet)
        if self.realtime:
            state.pacer.wait(state.media_seconds)
        if self.clock_every and state.frames % self.clock_every == 0:
            state.client.send_clock(state.frames)
        state.client.send_frame(packet.data)
        state.frames += 1
        state.media_seconds += packet_seconds(packet)

    def _open(self, packet: Packet) -> _PushedStream:
        name = None if self.stream is None else self.stream.replace("{stream}", packet.stream)
        info = probe_frame(packet.data)
        hello = hello_message(name, codec=packet.codec, bitrate=self.bitrate,
                              sample_rate=info.sample_rate if info else None)
        client = PushClient(self.host, self.port, self.token, hello, timeout=self.timeout,
                            retry_seconds=self.retry_seconds)
        client.connect()
        state = self._streams[packet.stream] = _PushedStream(client)
        return state

    @property
    def frames_sent(self) -> int:
        return sum(s.client.frames_sent for s in self._streams.values())

    def finalize(self) -> None:
        for state in self._streams.values():
            state.client.end()

    def close(self) -> None:
        for state in self._streams.values():
            state.client.close()


def packet_seconds(packet: Packet) -> float:
    if packet.duration is not None:
        return float(packet.duration * packet.time_base)
    info = probe_frame(packet.data)
    if info is None:
        raise FormatError(f"tcp_push: stream {packet.stream!r}: a packet without a duration "
                          f"and without a readable frame header cannot be paced")
    return info.frame_seconds


@dataclass
class SenderOptions:
    """What `flowengine send` sends, and where."""

    codec: str = "mp3"
    wav: str | None = None                 # any file PyAV reads; None: a tone
    seconds: float | None = None           # None: the whole file / an endless tone
    frequency: float = 440.0
    sample_rate: int = 48000
    channels: int = 2
    bitrate: int = 128000
    host: str = "127.0.0.1"
    port: int = 23457
    token: str | None = None
    stream: str | None = None
    realtime: bool = True
    clock_every: int = 10
    retry_seconds: float = 30.0


def _first_seconds(frames: Iterator[AudioFrame], seconds: float, rate: int) -> Iterator[AudioFrame]:
    """The frames up to `seconds` (the last one cut)."""
    left = int(round(seconds * rate))
    for frame in frames:
        if left <= 0:
            return
        if frame.samples > left:
            frame = AudioFrame(frame.planar()[:, :left], frame.format, frame.pts,
                               frame.time_base, frame.stream)
        left -= frame.samples
        yield frame


def build_sender(options: SenderOptions) -> tuple[object, list, TcpPushSink]:
    """(source, nodes, sink) of a send run; the file (if any) is opened here."""
    if options.codec not in LIVE_CODECS:
        raise ConfigError(f"send: codec must be {' or '.join(LIVE_CODECS)}, got {options.codec!r}")
    fmt = AudioFormat(options.sample_rate, options.channels, "f32", planar=True)
    chunk = 1152 if options.codec == "mp3" else 1024
    if options.wav is not None:
        from flowengine.ops.io import AudioFileReader
        reader = AudioFileReader(options.wav, format=fmt, chunk_samples=chunk, stream="live")
        source = reader.frames() if options.seconds is None else \
            _first_seconds(reader.frames(), options.seconds, fmt.sample_rate)
    else:
        from flowengine.ops.io import ToneSource
        source = ToneSource(frequency=options.frequency, seconds=options.seconds,
                            sample_rate=fmt.sample_rate, channels=fmt.channels,
                            chunk_samples=chunk, stream="live")
    encoder = make_encoder_node(options.codec, {"bitrate": options.bitrate, "input_format": fmt,
                                                "chunk_samples": chunk})
    sink = TcpPushSink(options.host, options.port, options.token, options.stream,
                       realtime=options.realtime, clock_every=options.clock_every,
                       bitrate=options.bitrate, retry_seconds=options.retry_seconds)
    return source, [encoder], sink


def run_sender(options: SenderOptions) -> RunStats:
    """Encode and push until the source ends (an endless tone: until Ctrl-C)."""
    source, nodes, sink = build_sender(options)
    try:
        return Runner(source, nodes, sink, source_timeout=max(60.0, options.retry_seconds)).run()
    finally:
        sink.close()
