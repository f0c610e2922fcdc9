"""The ingest framing as a pure codec: bytes in, frames out; no sockets, no clock.

Wire format (API.md, "The live streaming example"): every message is a 4-byte
big-endian length N followed by N bytes (one encoded frame); N == 0 ends the
stream. Theory of operation, h11-style: the connection feeds whatever bytes
it read to `FrameDecoder.receive_data()` (b"" when the peer closed) and then
calls `next_event()` until it answers NEED_DATA:

    bytes           one whole frame
    END_OF_STREAM   a zero-length message (another stream may follow)
    CLOSED          the peer closed cleanly, between two messages
    NEED_DATA       nothing complete yet: read more

A length above `max_frame_bytes` raises WireError as soon as its header is
read (the payload is never buffered), and so does a close in the middle of a
message; both errors name the byte offset. After an error the decoder stays
broken: every later call raises the same error. Memory is bounded by one
frame plus the data of one receive_data() call.
"""

from __future__ import annotations

import struct

from flowengine.errors import WireError

__all__ = [
    "NEED_DATA", "END_OF_STREAM", "CLOSED", "END_MARKER", "HEADER_BYTES",
    "DEFAULT_MAX_FRAME_BYTES", "FrameDecoder", "encode_frame",
]

HEADER_BYTES = 4
# Far above any MP3 (max ~2.9 KB) or ADTS (max 8191 B) frame, small enough to bound memory.
DEFAULT_MAX_FRAME_BYTES = 1 << 16
END_MARKER = b"\x00\x00\x00\x00"
_HEADER = struct.Struct(">I")
# Consumed bytes are cut from the buffer once they pass this size (amortised, not per frame).
_COMPACT_BYTES = 1 << 16


class _Event:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Event("NEED_DATA")
END_OF_STREAM = _Event("END_OF_STREAM")
CLOSED = _Event("CLOSED")


def encode_frame(payload: bytes | bytearray | memoryview) -> bytes:
    """One message: the 4-byte length and the payload. An empty payload is refused
    (a zero length means end of stream: send END_MARKER for that)."""
    if len(payload) == 0:
        raise WireError("an empty frame cannot be sent: length 0 means end of stream "
                        "(send END_MARKER to end the stream)")
    if len(payload) > 0xFFFFFFFF:
        raise WireError(f"frame of {len(payload)} bytes does not fit a 4-byte length")
    return _HEADER.pack(len(payload)) + bytes(payload)


class FrameDecoder:
    """Cuts a received byte stream into frames (see the module doc for the events)."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, where: str = "ingest") -> None:
        if isinstance(max_frame_bytes, bool) or not isinstance(max_frame_bytes, int) \
                or max_frame_bytes <= 0:
            raise ValueError(f"max_frame_bytes must be a positive integer, got {max_frame_bytes!r}")
        self.max_frame_bytes = max_frame_bytes
        self.where = where
        self._buf = bytearray()
        self._pos = 0             # read position in _buf
        self._base = 0            # stream offset of _buf[0]
        self._peer_closed = False
        self._error: WireError | None = None
        self.frames = 0           # whole frames returned
        self.ends = 0             # END_OF_STREAM markers returned

    @property
    def offset(self) -> int:
        """Stream offset of the next unread byte (bytes consumed so far)."""
        return self._base + self._pos

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as an event."""
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes read from the peer; b"" means the peer closed its side."""
        self._raise_if_failed()
        if self._peer_closed:
            if data:
                raise WireError(f"{self.where}: data received after the peer closed")
            return
        if not data:
            self._peer_closed = True
            return
        if self._pos >= _COMPACT_BYTES:
            del self._buf[:self._pos]
            self._base += self._pos
            self._pos = 0
        self._buf += data

    def next_event(self) -> bytes | _Event:
        """The next frame or event (NEED_DATA when more bytes are needed)."""
        self._raise_if_failed()
        available = len(self._buf) - self._pos
        if available < HEADER_BYTES:
            return self._short(available, HEADER_BYTES, "header")
        (length,) = _HEADER.unpack_from(self._buf, self._pos)
        if length == 0:
            self._pos += HEADER_BYTES
            self.ends += 1
            return END_OF_STREAM
        if length > self.max_frame_bytes:
            self._fail(f"{self.where}: frame of {length} bytes at byte offset {self.offset} "
                       f"exceeds the maximum of {self.max_frame_bytes} bytes (max_frame_bytes)")
        if available - HEADER_BYTES < length:
            return self._short(available - HEADER_BYTES, length, "payload")
        start = self._pos + HEADER_BYTES
        frame = bytes(self._buf[start:start + length])
        self._pos = start + length
        self.frames += 1
        return frame

    def _short(self, have: int, need: int, part: str) -> _Event:
        if not self._peer_closed:
            return NEED_DATA
        if part == "header" and have == 0:
            return CLOSED
        self._fail(f"{self.where}: connection closed mid-frame at byte offset {self.offset}: "
                   f"got {have} of {need} {part} bytes")

    def _fail(self, message: str):
        self._error = WireError(message)
        self._buf = bytearray()      # a broken stream keeps nothing in memory
        self._pos = 0
        raise self._error

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise WireError(str(self._error))
