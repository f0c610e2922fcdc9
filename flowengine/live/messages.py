"""What travels besides the audio bytes: stream metadata, control frames and WebSocket messages.

Ingest side (inside the length-prefixed framing of framing.py):
- an optional shared-secret token as the very first frame (raw UTF-8 bytes);
- JSON control frames, recognised by their first byte `{` (an MP3 or ADTS
  frame always starts with 0xFF, so the two never mix up):
  `{"type": "hello", "stream": NAME, "codec": ..., "bitrate": ...}` names the
  stream and declares what the frame headers cannot say (AAC's bitrate);
  `{"type": "clock", "sender_time": UNIX_SECONDS, "seq": N}` stamps the
  audio frame that follows it with the sender's wall clock (for latency);
- everything else is an audio frame, checked against its codec's header.

WebSocket side (server -> browser): a JSON text message
`{"type": "metadata", "codec", "mime", "sample_rate", "channels",
"chunk_samples", "bitrate", "stream", "generation"}` first, then one binary
message per frame; text messages in between: `clock` (the sender's stamp of
the next binary message, with the server's `server_time`), `skip` (this
client fell behind and `frames` frames were left out), `end` (the stream
ended; a new `metadata` follows when a stream starts again).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from flowengine.ops.codecs.adts import parse_adts_header
from flowengine.ops.codecs.mp3frames import parse_frame_header
from flowengine.errors import WireError

__all__ = [
    "DEFAULT_HTTP_PORT", "DEFAULT_INGEST_PORT", "DEFAULT_CLIENT_QUEUE_FRAMES", "LIVE_CODECS", "MIME_TYPES", "AAC_FRAME_SAMPLES", "StreamInfo", "probe_frame", "is_frame_of",
    "is_control_frame", "parse_control", "hello_message", "clock_message", "control_frame_bytes",
]

# The original example's ports: HTTP + WebSocket, and the TCP ingest.
DEFAULT_HTTP_PORT = 23456
DEFAULT_INGEST_PORT = 23457
# A browser's queue in the hub: about 6 s of MP3 at 48 kHz (26 ms frames); a browser that
# stalls longer skips ahead. Here, not in hub.py, so that the live operators' registration
# (which every process loads) does not import asyncio with the hub.
DEFAULT_CLIENT_QUEUE_FRAMES = 256
LIVE_CODECS = ("mp3", "aac")
MIME_TYPES = {"mp3": "audio/mpeg", "aac": "audio/aac"}
AAC_FRAME_SAMPLES = 1024
_CONTROL_TYPES = ("hello", "clock")
# Fields of a hello that may override what the first frame's header says.
_HELLO_FIELDS = ("codec", "sample_rate", "channels", "chunk_samples", "bitrate")


@dataclass(frozen=True)
class StreamInfo:
    """What a player needs to know about a live stream before its first frame."""

    codec: str
    sample_rate: int
    channels: int
    chunk_samples: int
    bitrate: int | None = None

    @property
    def mime(self) -> str:
        return MIME_TYPES[self.codec]

    @property
    def frame_seconds(self) -> float:
        return self.chunk_samples / self.sample_rate

    def metadata(self, **extra) -> dict:
        """The WebSocket metadata message (API.md's keys, plus `type` and `extra`)."""
        return {"type": "metadata", **asdict(self), "mime": self.mime, **extra}

    def with_hello(self, hello: dict | None) -> "StreamInfo":
        """This info with the sender's declared values where it gave them (bitrate of AAC)."""
        if not hello:
            return self
        given = {k: hello[k] for k in _HELLO_FIELDS if hello.get(k) is not None and k != "codec"}
        return replace(self, **given)


def probe_frame(data: bytes) -> StreamInfo | None:
    """StreamInfo from one frame's header (MPEG audio Layer III or ADTS AAC), or None."""
    mp3 = parse_frame_header(data)
    if mp3 is not None and mp3.layer == 3:
        return StreamInfo("mp3", mp3.sample_rate, mp3.channels, mp3.samples_per_frame, mp3.bitrate)
    adts = parse_adts_header(data)
    if adts is not None and adts.channel_config > 0:
        return StreamInfo("aac", adts.sample_rate, adts.channel_config,
                          AAC_FRAME_SAMPLES * adts.raw_data_blocks)
    return None


def is_frame_of(codec: str, data: bytes) -> bool:
    """True when `data` starts with a valid header of `codec` (cheap check of every frame)."""
    if codec == "mp3":
        header = parse_frame_header(data)
        return header is not None and header.layer == 3
    return parse_adts_header(data) is not None


def is_control_frame(data: bytes) -> bool:
    return data[:1] == b"{"


def parse_control(data: bytes, where: str) -> dict:
    """A JSON control frame as a dict; WireError saying what is wrong otherwise."""
    try:
        message = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"{where}: control frame is not valid JSON: {exc}") from None
    if not isinstance(message, dict) or message.get("type") not in _CONTROL_TYPES:
        got = message.get("type") if isinstance(message, dict) else type(message).__name__
        raise WireError(f"{where}: control frame type must be one of "
                        f"{', '.join(_CONTROL_TYPES)}, got {got!r}")
    if message["type"] == "clock" and not isinstance(message.get("sender_time"), (int, float)):
        raise WireError(f"{where}: clock frame needs a numeric sender_time, got "
                        f"{message.get('sender_time')!r}")
    if message["type"] == "hello":
        stream = message.get("stream")
        if stream is not None and (not isinstance(stream, str) or not 0 < len(stream) <= 64):
            raise WireError(f"{where}: hello stream name must be a string of 1..64 characters, "
                            f"got {stream!r}")
        codec = message.get("codec")
        if codec is not None and codec not in LIVE_CODECS:
            raise WireError(f"{where}: hello codec must be one of {', '.join(LIVE_CODECS)}, "
                            f"got {codec!r}")
    return message


def control_frame_bytes(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def hello_message(stream: str | None = None, **fields) -> dict:
    """The sender's hello: its stream name and what it knows of the stream (codec, bitrate, ...)."""
    return {"type": "hello", "stream": stream,
            **{k: v for k, v in fields.items() if k in _HELLO_FIELDS and v is not None}}


def clock_message(sender_time: float, seq: int) -> dict:
    """The sender's wall-clock stamp of the audio frame that follows (frame number `seq`)."""
    return {"type": "clock", "sender_time": sender_time, "seq": seq}
