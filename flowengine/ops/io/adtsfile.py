"""Raw ADTS AAC files (.aac) cut into frames by their headers, with the byte offset of each.

FFmpeg's ADTS demuxer resyncs over damaged bytes without a word and counts
packet positions as if nothing had been skipped: after damage neither the
number of frames lost nor any later byte offset is known. The reader reads
such files with this framer instead (FFmpeg still decodes the frames).

A frame is handed out as FRAME when its header is valid, belongs to the
stream (the first frame's profile, rate and channels) and the next frame's
header follows right after it (or the file ends there). Anything else is
handed out whole up to the next such frame: as LEADING before the first
frame (garbage before the audio), as GLUED after it (damage, with whatever
frames it still holds: the decoder cuts it again, see
flowengine.ops.codecs.salvage). A frame the file's end cuts short is SHORT.
An ID3v2 tag at the start and an ID3v1 tag at the end are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from flowengine.ops.codecs.decoder_headers import id3v2_length

__all__ = ["AdtsFileFrames", "FRAME", "GLUED", "SHORT", "LEADING"]

FRAME, GLUED, SHORT, LEADING = "frame", "glued", "short", "leading"
_READ = 1 << 16
_ID3V1 = 128


def _header_key(buf, pos: int) -> tuple[int, int, int] | None:
    """The fields of the ADTS header at `pos` that stay the same in a stream, or None."""
    if buf[pos] != 0xFF or buf[pos + 1] & 0xF6 != 0xF0 or (buf[pos + 2] >> 2) & 0xF > 12:
        return None
    return buf[pos + 1], buf[pos + 2] & 0xFD, buf[pos + 3] & 0xC0


class AdtsFileFrames:
    """Iterates (kind, byte offset, bytes) over an ADTS file from `start` (module doc).

    `packets` and `bytes` count the FRAME and GLUED items handed out so far (the mean
    packet size a damaged stretch is measured in).
    """

    def __init__(self, file: BinaryIO, start: int = 0) -> None:
        self._file = file
        self._start = start
        self.packets = 0
        self.bytes = 0

    def __iter__(self) -> Iterator[tuple[str, int, bytes]]:
        file = self._file
        file.seek(self._start)
        buf = bytearray(file.read(_READ))
        base = self._start              # file offset of buf[0]
        eof = len(buf) < _READ
        tag = id3v2_length(bytes(buf[:10]))
        pos = min(tag, len(buf)) if tag else 0
        key = None                      # the stream's header fields, from its first frame

        while True:
            if len(buf) - pos < _READ // 2 and not eof:     # keep a frame and a header ahead
                del buf[:pos]
                base += pos
                pos = 0
                more = file.read(_READ)
                eof = len(more) < _READ
                buf += more
            end = len(buf)
            if pos >= end:
                return
            if eof and end - pos == _ID3V1 and buf[pos:pos + 3] == b"TAG":
                return
            length = self._length(buf, pos, key)
            if length:
                after = pos + length
                if after > end:          # only at the end of the file: cut short
                    yield SHORT, base + pos, bytes(buf[pos:])
                    return
                if after == end or self._length(buf, after, key or _header_key(buf, pos)) \
                        or (eof and end - after == _ID3V1 and buf[after:after + 3] == b"TAG"):
                    if key is None:
                        key = _header_key(buf, pos)
                    yield self._counted(FRAME, base + pos, bytes(buf[pos:after]))
                    pos = after
                    continue
            resync, found = self._resync(buf, pos + 1, key)
            kind = GLUED if key is not None else LEADING
            key = found or key
            span = bytes(buf[pos:resync])
            yield (self._counted(kind, base + pos, span) if kind == GLUED
                   else (kind, base + pos, span))
            pos = resync

    def _counted(self, kind: str, offset: int, data: bytes) -> tuple[str, int, bytes]:
        self.packets += 1
        self.bytes += len(data)
        return kind, offset, data

    @staticmethod
    def _length(buf, pos: int, key: tuple[int, int, int] | None) -> int:
        """Length of the frame at `pos` if its header is valid (and of the stream), else 0."""
        if len(buf) - pos < 7:
            return 0
        found = _header_key(buf, pos)
        if found is None or (key is not None and found != key):
            return 0
        length = ((buf[pos + 3] & 3) << 11) | (buf[pos + 4] << 3) | (buf[pos + 5] >> 5)
        return length if length >= 7 + (0 if buf[pos + 1] & 1 else 2) else 0

    def _resync(self, buf, start: int, key: tuple[int, int, int] | None
                ) -> tuple[int, tuple[int, int, int] | None]:
        """The next position from `start` where a frame of the stream starts that a second
        one follows (or that ends the buffer exactly), or where three frames of another
        stream follow one another (the stream changed: its frames go on as FRAMEs, for the
        decoder to say so); the buffer's end if neither. Returns (position, the new stream's
        header fields or None)."""
        end = len(buf)
        pos = buf.find(b"\xff", start)
        while 0 <= pos < end:
            length = self._length(buf, pos, key)
            if length:
                after = pos + length
                if after == end or (after < end and
                                    self._length(buf, after, key or _header_key(buf, pos))):
                    return pos, None
            elif key is not None and self._chain(buf, pos, 3):
                return pos, _header_key(buf, pos)
            pos = buf.find(b"\xff", pos + 1)
        return end, None

    def _chain(self, buf, pos: int, count: int) -> bool:
        """Whether `count` frames of one stream follow one another from `pos`."""
        found = _header_key(buf, pos) if len(buf) - pos >= 7 else None
        for _ in range(count):
            length = self._length(buf, pos, found) if found else 0
            if not length:
                return False
            pos += length
        return True
