"""MPEG audio (MP3) frame headers: parse one, and cut a byte stream into whole frames.

An MPEG audio frame starts with a 4-byte header (11 sync bits, version, layer,
bitrate, sample rate, padding, channel mode). The header alone gives the frame's
length in bytes and its duration in samples, so a stream can be split without
decoding. Free-format frames (bitrate index 0) carry no length and are treated
as invalid, like FFmpeg's parser does for non-free streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from flowengine.errors import CodecError

__all__ = [
    "MP3_SAMPLE_RATES", "mp3_bitrates_kbps", "mp3_samples_per_frame",
    "Mp3FrameHeader", "parse_frame_header", "announced_frame_length", "find_frame_sync", "Mp3FrameSplitter",
]

HEADER_BYTES = 4

# Version bits -> name; "1" = MPEG-1, "2" = MPEG-2 LSF, "2.5" = the unofficial low-rate extension.
_VERSIONS = {0b11: "1", 0b10: "2", 0b00: "2.5"}
_LAYERS = {0b11: 1, 0b10: 2, 0b01: 3}
_RATES = {"1": (44100, 48000, 32000), "2": (22050, 24000, 16000), "2.5": (11025, 12000, 8000)}
MP3_SAMPLE_RATES = tuple(sorted(rate for rates in _RATES.values() for rate in rates))

# Bitrate index 1..14 in kb/s, per (version family, layer). MPEG-2 and 2.5 share a table.
_BITRATES = {
    ("1", 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    ("1", 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    ("1", 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    ("2", 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    ("2", 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    ("2", 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}


def _family(version: str) -> str:
    return "1" if version == "1" else "2"


def _version_of_rate(sample_rate: int) -> str | None:
    for version, rates in _RATES.items():
        if sample_rate in rates:
            return version
    return None


def mp3_bitrates_kbps(sample_rate: int) -> tuple[int, ...]:
    """Layer III bitrates (kb/s) allowed at `sample_rate`; empty if the rate is not an MP3 rate."""
    version = _version_of_rate(sample_rate)
    return () if version is None else _BITRATES[(_family(version), 3)]


def mp3_samples_per_frame(sample_rate: int) -> int:
    """Samples per Layer III frame: 1152 for MPEG-1 rates (32-48 kHz), 576 below."""
    return 1152 if _version_of_rate(sample_rate) == "1" else 576


@dataclass(frozen=True)
class Mp3FrameHeader:
    """The fields of one MPEG audio frame header that size and time the frame."""

    version: str          # "1", "2" or "2.5"
    layer: int            # 1, 2 or 3
    bitrate: int          # bits per second
    sample_rate: int
    padding: bool
    channels: int
    protected: bool       # a 16-bit CRC follows the header

    @property
    def samples_per_frame(self) -> int:
        if self.layer == 1:
            return 384
        if self.layer == 3 and self.version != "1":
            return 576
        return 1152

    @property
    def frame_length(self) -> int:
        """Bytes in the whole frame, header included."""
        if self.layer == 1:
            return (12 * self.bitrate // self.sample_rate + self.padding) * 4
        # Bytes = samples/8 * bitrate / rate (+ one padding slot).
        return self.samples_per_frame // 8 * self.bitrate // self.sample_rate + self.padding


def parse_frame_header(data: bytes | bytearray | memoryview, offset: int = 0) -> Mp3FrameHeader | None:
    """The header at `data[offset:offset+4]`, or None if those bytes are not a valid header."""
    if len(data) - offset < HEADER_BYTES:
        return None
    b0, b1, b2, b3 = data[offset], data[offset + 1], data[offset + 2], data[offset + 3]
    if b0 != 0xFF or (b1 & 0xE0) != 0xE0:
        return None
    version = _VERSIONS.get((b1 >> 3) & 0b11)
    layer = _LAYERS.get((b1 >> 1) & 0b11)
    bitrate_index = b2 >> 4
    rate_index = (b2 >> 2) & 0b11
    if version is None or layer is None or bitrate_index in (0, 15) or rate_index == 3:
        return None
    return Mp3FrameHeader(
        version=version,
        layer=layer,
        bitrate=_BITRATES[(_family(version), layer)][bitrate_index - 1] * 1000,
        sample_rate=_RATES[version][rate_index],
        padding=bool((b2 >> 1) & 1),
        channels=1 if (b3 >> 6) == 0b11 else 2,
        protected=not (b1 & 1),
    )


def announced_frame_length(data: bytes | bytearray | memoryview) -> int | None:
    """Bytes of the whole frame the header at the start of `data` announces, None when
    `data` does not start with a header (a packet shorter than this was cut short)."""
    return _frame_length(bytes(data[:3]))


@lru_cache(maxsize=64)
def _frame_length(header: bytes) -> int | None:
    # Cached on the 3 bytes every field of the length is in: a stream repeats a few headers.
    parsed = parse_frame_header(header + b"\0")
    return None if parsed is None else parsed.frame_length


def find_frame_sync(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """Offset of the first valid frame header at or after `start`, or -1."""
    end = len(data) - HEADER_BYTES
    pos = start
    while pos <= end:
        if data[pos] == 0xFF and parse_frame_header(data, pos) is not None:
            return pos
        pos += 1
    return -1


class Mp3FrameSplitter:
    """Cuts an MP3 byte stream, arriving in arbitrary pieces, into whole frames.

    For encoder output, which must be a clean frame sequence: bytes that are not
    a frame header where one is due raise CodecError with the stream offset,
    and a partial frame stays buffered until the rest of it arrives.
    """

    def __init__(self, codec: str = "mp3") -> None:
        self._codec = codec
        self._buffer = bytearray()
        self._offset = 0          # stream offset of _buffer[0]

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def push(self, data: bytes) -> list[bytes]:
        """Add bytes; return every frame now complete, in order."""
        self._buffer += data
        frames: list[bytes] = []
        buffer = self._buffer
        pos = 0
        while len(buffer) - pos >= HEADER_BYTES:
            length = _frame_length(bytes(buffer[pos:pos + 3]))   # cached: headers repeat
            if length is None:
                raise CodecError(
                    f"{self._codec}: expected an MPEG audio frame header at byte offset "
                    f"{self._offset + pos}, got {bytes(buffer[pos:pos + HEADER_BYTES]).hex()}")
            if len(buffer) - pos < length:
                break
            frames.append(bytes(buffer[pos:pos + length]))
            pos += length
        if pos:
            del buffer[:pos]
            self._offset += pos
        return frames

    def finish(self) -> None:
        """End of stream: a partial frame left over is an error (it would be a silent drop)."""
        if self._buffer:
            raise CodecError(
                f"{self._codec}: stream ends inside a frame at byte offset {self._offset} "
                f"({len(self._buffer)} byte(s) of an incomplete frame)")

    def reset(self) -> None:
        self._buffer.clear()
        self._offset = 0
