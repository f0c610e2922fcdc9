"""Cut a compressed byte stream, delivered in arbitrary slices, into codec frames.

Each splitter takes bytes as they arrive (`feed`) and returns `Unit`s: whole
frames with the byte offset where they start in the input stream, stretches
of bytes that are not frames (junk), and at the end (`flush`) a frame cut
short. Knowing offsets lets the decoder say *where* bad data was.

- MP3 and ADTS AAC run FFmpeg's parser (`CodecContext.parse`), then locate
  each packet in the bytes fed so far, and check its length against the
  frame header: FFmpeg glues damaged bytes onto the previous frame, which
  would make the decoder reject (MP3) or silently drop (zeros after MP3) a
  good frame. The extra bytes are split off and reported as junk.
  A leading ID3v2 tag and a Xing/Info frame (metadata, no audio) are skipped.
- FLAC has its own splitter: FFmpeg's FLAC parser holds ~10 frames back
  before it releases one and silently drops or merges frames around damage.
  Ours links each frame header to the next by its frame number (headers are
  protected by a CRC-8), so it keeps only one frame of latency and knows when
  frames are missing; the decoder checks each frame's CRC-16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import av

from flowengine.ops.codecs.decoder_headers import (FLAC_MAX_HEADER_BYTES, adts_frame_length, flac_frame_end, id3v2_length,
                              is_mp3_info_frame, mp3_frame_length, parse_flac_frame_header, same_stream)

__all__ = ["Unit", "FRAME", "JUNK", "SHORT", "MISSING", "LAST", "ParserSplitter", "FlacSplitter",
           "make_splitter"]

FRAME = "frame"      # a frame to decode
JUNK = "junk"        # bytes that are not a frame (garbage, damaged frame)
SHORT = "short"      # a frame with fewer bytes than its header announces (truncated)
MISSING = "missing"  # FLAC frame numbers skipped: frames lost inside the preceding unit
LAST = "last"        # FLAC's final frame: its end is the end of input, so it may be cut short

# Largest FLAC frame: 65535 samples x 8 channels x 32 bits, plus headers.
_MAX_FLAC_FRAME_BYTES = 65535 * 8 * 4 + 1024
# Safety bound on parser flush calls: each returns at most one packet.
_MAX_FLUSH_CALLS = 1 << 16


@dataclass
class Unit:
    """A piece of the input stream: what it is, where it starts, its bytes."""

    kind: str
    offset: int
    data: bytes
    expected: int | None = None   # SHORT: bytes the header announced; MISSING: frames lost


class ParserSplitter:
    """MP3 / ADTS splitting with FFmpeg's parser, plus offsets and header length checks."""

    def __init__(self, codec: str) -> None:
        self._codec = codec
        self._frame_length: Callable[[bytes], int | None] = (
            mp3_frame_length if codec == "mp3" else adts_frame_length)
        self._parser = av.CodecContext.create(codec, "r")
        self._window = bytearray()   # bytes fed and not yet attributed to a unit
        self._window_start = 0       # stream offset of _window[0]
        self._fed = 0
        self._prefix = bytearray()   # first bytes, held until we know if an ID3v2 tag starts there
        self._in_prefix = codec == "mp3"
        self._skip = 0               # bytes of ID3v2 tag still to drop
        self._reference: bytes | None = None   # header of the first frame: the stream's parameters
        self._confirmed = False
        self._carry = bytearray()    # parsed bytes not yet cut into frames (an incomplete frame)
        self._carry_offset = 0
        self._stream_start: int | None = None   # offset of the first byte after any ID3v2 tag

    @property
    def buffered_bytes(self) -> int:
        return len(self._window) + len(self._prefix) + len(self._carry)

    def feed(self, data: bytes) -> list[Unit]:
        if self._skip:
            drop = min(self._skip, len(data))
            self._skip -= drop
            self._fed += drop
            self._window_start += drop
            data = data[drop:]
        if self._in_prefix:
            data = self._take_prefix(data)
            if self._in_prefix or not data:
                return []
        if self._stream_start is None:
            self._stream_start = self._window_start
        self._fed += len(data)
        self._window += data
        return self._attribute(self._parser.parse(data))

    def flush(self) -> list[Unit]:
        units: list[Unit] = []
        if self._in_prefix:
            self._in_prefix = False
            pending, self._prefix = bytes(self._prefix), bytearray()
            units += self.feed(pending)
        packets = []
        for _ in range(_MAX_FLUSH_CALLS):
            got = self._parser.parse(None)
            if not got:
                break
            packets += got
        units += self._attribute(packets, at_end=True)
        if self._window:
            units += self._end_carry()
            units += self._tail(bytes(self._window), self._window_start)
            self._window_start += len(self._window)
            self._window.clear()
        return units

    def _take_prefix(self, data: bytes) -> bytes:
        """Hold the first bytes until an ID3v2 tag can be recognised (and skipped)."""
        self._prefix += data
        head = bytes(self._prefix[:10])
        if len(head) < 10 and b"ID3".startswith(head[:3]):
            return b""
        self._in_prefix = False
        pending, self._prefix = bytes(self._prefix), bytearray()
        tag = id3v2_length(pending)
        if tag is None:
            return pending
        skipped = min(tag, len(pending))
        self._skip = tag - skipped
        self._fed += skipped
        self._window_start += skipped
        return pending[skipped:]

    def _attribute(self, packets, at_end: bool = False) -> list[Unit]:
        """Find each parsed packet in the window; bytes between packets are junk."""
        units: list[Unit] = []
        window = self._window
        cursor = 0
        for packet in packets:
            data = bytes(packet)
            found = window.find(data, cursor)
            if found < 0:   # not expected from FFmpeg's parsers; keep offsets plausible
                found = cursor
            if found > cursor:
                units += self._end_carry()
                units.append(Unit(JUNK, self._window_start + cursor, bytes(window[cursor:found])))
            if not self._carry:
                self._carry_offset = self._window_start + found
            self._carry += data
            units += self._split_carry()
            cursor = min(found + len(data), len(window))
        if cursor:
            del window[:cursor]
            self._window_start += cursor
        if at_end:
            units += self._end_carry()
        return units

    def _split_carry(self, at_end: bool = False) -> list[Unit]:
        """Cut whole frames off the parsed bytes by their header lengths; keep an incomplete last one.

        The parser's own packet boundaries are not trusted: after damage it
        glues junk to a frame or cuts a good frame in two.
        """
        units: list[Unit] = []
        data, offset = self._carry, self._carry_offset
        pos = 0
        while pos < len(data):
            header = bytes(data[pos:pos + 6])
            length = self._frame_length(header)
            if length is not None and self._reference is not None \
                    and not same_stream(self._codec, self._reference, header):
                length = None   # a header of another stream inside junk: a false sync
            if length is None:
                resync = self._resync(data, pos + 1)
                units.append(Unit(JUNK, offset + pos, bytes(data[pos:resync])))
                self._confirmed = False
                pos = resync
                continue
            if pos + length > len(data):
                break
            if not self._confirmed and offset + pos != self._stream_start:
                # Searching for sync in junk: random bytes look like a header now and
                # then, so demand a second header of the same stream right after it.
                following = bytes(data[pos + length:pos + length + 6])
                if len(following) < 6 and not (at_end and pos + length == len(data)):
                    break
                if following and not same_stream(self._codec, header, following):
                    resync = self._resync(data, pos + 1)
                    units.append(Unit(JUNK, offset + pos, bytes(data[pos:resync])))
                    pos = resync
                    continue
            frame = bytes(data[pos:pos + length])
            if not (self._codec == "mp3" and self._reference is None and is_mp3_info_frame(frame)):
                units.append(Unit(FRAME, offset + pos, frame))
            self._reference = self._reference or header
            self._confirmed = True
            pos += length
        del data[:pos]
        self._carry_offset += pos
        return units

    def _end_carry(self) -> list[Unit]:
        """No more bytes will follow the held ones: cut what is whole, report the rest."""
        units = self._split_carry(at_end=True)
        if not self._carry:
            return units
        units += self._tail(bytes(self._carry), self._carry_offset)
        self._carry_offset += len(self._carry)
        self._carry.clear()
        return units

    def _resync(self, data: bytes, start: int) -> int:
        """Position of the first frame header in data[start:] confirmed by what follows it (or the end)."""
        end = len(data)
        pos = data.find(b"\xff", start)
        while 0 <= pos < end:
            length = self._frame_length(data[pos:pos + 6])
            if length is not None:
                after = pos + length
                if after == end or (after < end and self._frame_length(data[after:after + 6])):
                    return pos
            pos = data.find(b"\xff", pos + 1)
        return end

    def _tail(self, data: bytes, offset: int) -> list[Unit]:
        """Bytes left at the end: a frame cut short, an ID3v1 tag (ignored) or junk."""
        length = self._frame_length(data[:6])
        if length is not None and len(data) < length:
            return [Unit(SHORT, offset, data, length)]
        if len(data) == 128 and data[:3] == b"TAG":
            return []
        return [Unit(JUNK, offset, data)]


class FlacSplitter:
    """FLAC stream splitting: the 'fLaC' header block, then frames linked by frame number."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._buf_start = 0            # stream offset of _buf[0]
        self._header_done = False
        self._frame_at: int | None = None   # position in _buf of the current frame's header
        self._frame_header = None
        self._search_from = 0

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Unit]:
        self._buf += data
        units: list[Unit] = []
        if not self._header_done:
            header = self._stream_header()
            if header is None:
                return units
            units += header
        units += self._frames()
        self._compact()
        return units

    def flush(self) -> list[Unit]:
        units: list[Unit] = []
        if not self._header_done:
            self._header_done = True
            if self._buf[:4] == b"fLaC":   # metadata cut short: nothing decodable follows
                units.append(Unit(SHORT, self._buf_start, bytes(self._buf)))
                self._buf_start += len(self._buf)
                self._buf.clear()
                return units
        units += self._frames()
        if self._frame_at is not None:
            units.append(Unit(LAST, self._buf_start + self._frame_at, bytes(self._buf[self._frame_at:])))
        elif self._buf:
            units.append(Unit(JUNK, self._buf_start, bytes(self._buf)))
        self._buf_start += len(self._buf)
        self._buf.clear()
        self._frame_at = None
        self._search_from = 0
        return units

    def _stream_header(self) -> list[Unit] | None:
        """The 'fLaC' marker and metadata blocks as one unit (FFmpeg's decoder reads STREAMINFO from it)."""
        buf = self._buf
        if len(buf) < 4 and b"fLaC".startswith(bytes(buf)):
            return None
        if buf[:4] != b"fLaC":
            self._header_done = True
            return []
        pos = 4
        while True:
            if len(buf) < pos + 4:
                return None
            last = buf[pos] & 0x80
            pos += 4 + int.from_bytes(bytes(buf[pos + 1:pos + 4]), "big")
            if len(buf) < pos:
                return None
            if last:
                break
        self._header_done = True
        unit = Unit(FRAME, self._buf_start, bytes(buf[:pos]))
        del buf[:pos]
        self._buf_start += pos
        return [unit]

    def _next_header(self, start: int, after=None):
        """First valid frame header at or after `start` (linked to `after` if given): (pos, header)."""
        buf = self._buf
        pos = start
        while True:
            pos = buf.find(b"\xff", pos)
            if pos < 0:
                return None, max(start, len(buf) - FLAC_MAX_HEADER_BYTES)
            header = parse_flac_frame_header(buf, pos)
            if header is False:
                return None, pos
            if header is not None and (after is None or header.follows(after) >= 0):
                return pos, header
            pos += 1

    def _frames(self) -> list[Unit]:
        units: list[Unit] = []
        while True:
            if self._frame_at is None:
                pos, header = self._next_header(self._search_from)
                if pos is None:   # no frame start yet: what lies before the search point is junk
                    if header:
                        units.append(Unit(JUNK, self._buf_start, bytes(self._buf[:header])))
                        del self._buf[:header]
                        self._buf_start += header
                    self._search_from = 0
                    return units
                if pos > 0:
                    units.append(Unit(JUNK, self._buf_start, bytes(self._buf[:pos])))
                    del self._buf[:pos]
                    self._buf_start += pos
                self._frame_at, self._frame_header = 0, header
                self._search_from = header.length
            pos, header = self._next_header(self._search_from, self._frame_header)
            if pos is None:
                self._search_from = header
                if len(self._buf) - self._frame_at > _MAX_FLAC_FRAME_BYTES:
                    # No successor this far on: hand the frame over (the decoder judges
                    # it) rather than buffer a stream that lost sync without bound.
                    units.append(Unit(FRAME, self._buf_start + self._frame_at,
                                      bytes(self._buf[self._frame_at:])))
                    self._buf_start += len(self._buf)
                    self._buf.clear()
                    self._frame_at = None
                    self._search_from = 0
                return units
            start = self._buf_start + self._frame_at
            data = bytes(self._buf[self._frame_at:pos])
            lost = header.follows(self._frame_header)
            end = flac_frame_end(data, self._frame_header.length) if lost else None
            if end is not None and end < len(data):   # damaged frames follow: split them off as junk
                units += [Unit(FRAME, start, data[:end]), Unit(JUNK, start + end, data[end:])]
            else:
                units.append(Unit(FRAME, start, data))
                if lost:
                    units.append(Unit(MISSING, start, b"", lost))
            self._frame_at, self._frame_header = pos, header
            self._search_from = pos + header.length

    def _compact(self) -> None:
        """Drop bytes before the current frame so the buffer holds at most one frame plus a header."""
        cut = self._frame_at or 0
        if cut:
            del self._buf[:cut]
            self._buf_start += cut
            self._search_from -= cut
            if self._frame_at is not None:
                self._frame_at = 0


def make_splitter(codec: str):
    """The splitter for a byte-stream codec (mp3, aac, flac)."""
    return FlacSplitter() if codec == "flac" else ParserSplitter(codec)
