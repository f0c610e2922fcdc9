"""Write a native FLAC file from FLAC frames that are already encoded (no re-encoding).

A FLAC file is "fLaC", a STREAMINFO metadata block, then the frames. FFmpeg's
muxer writes the STREAMINFO it is given and never recounts it, so frames from
anywhere (an Encoder, another file) would get a header with a wrong or
unknown length. This writer counts instead: block sizes, frame sizes and the
total sample count are taken from the frames written and patched into
STREAMINFO when the file is closed. Rate, channels and bit depth come from
the stream's STREAMINFO (Packet.extradata) when there is one, else from the
first frame's header.

Frames are also renumbered when they need it: a FLAC frame header carries its frame number
(fixed block size) or first sample number (variable block size), which is where a reader
takes the frame's timestamp from. Frames from two encoders in one file (an encoder
restarted by ``restart: on-failure`` starts counting at 0 again) would jump back in time
(FFmpeg: "sample/frame number mismatch", "non monotonically increasing dts"). A frame whose
number is not the next one gets it, with its header CRC-8 and frame CRC-16 recomputed; the
others are written as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from flowengine.errors import FormatError
from flowengine.ops.codecs.decoder_headers import flac_crc8, flac_crc16

__all__ = ["StreamInfo", "FlacFrameInfo", "parse_streaminfo", "parse_frame_info", "FlacFileWriter"]

STREAMINFO_BYTES = 34
_MAGIC = b"fLaC"
_LAST_BLOCK_STREAMINFO = bytes([0x80, 0, 0, STREAMINFO_BYTES])   # last-metadata flag, type 0
_NO_MD5 = bytes(16)

# Frame header codes (FLAC format, "FRAME_HEADER"); 0 means "see STREAMINFO".
_RATES = {1: 88200, 2: 176400, 3: 192000, 4: 8000, 5: 16000, 6: 22050, 7: 24000, 8: 32000,
          9: 44100, 10: 48000, 11: 96000}
_BITS = {1: 8, 2: 12, 4: 16, 5: 20, 6: 24, 7: 32}


@dataclass(frozen=True)
class StreamInfo:
    min_block: int
    max_block: int
    min_frame: int
    max_frame: int
    sample_rate: int
    channels: int
    bits_per_sample: int
    total_samples: int
    md5: bytes = _NO_MD5

    def pack(self) -> bytes:
        tail = (self.sample_rate << 44) | ((self.channels - 1) << 41) \
            | ((self.bits_per_sample - 1) << 36) | self.total_samples
        return (self.min_block.to_bytes(2, "big") + self.max_block.to_bytes(2, "big")
                + self.min_frame.to_bytes(3, "big") + self.max_frame.to_bytes(3, "big")
                + tail.to_bytes(8, "big") + self.md5)


def parse_streaminfo(data: bytes) -> StreamInfo:
    """The 34-byte STREAMINFO block (FFmpeg's FLAC extradata)."""
    if len(data) != STREAMINFO_BYTES:
        raise FormatError(f"flac: STREAMINFO must be {STREAMINFO_BYTES} bytes, got {len(data)}")
    tail = int.from_bytes(data[10:18], "big")
    return StreamInfo(int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big"),
                      int.from_bytes(data[4:7], "big"), int.from_bytes(data[7:10], "big"),
                      tail >> 44, ((tail >> 41) & 0x7) + 1, ((tail >> 36) & 0x1F) + 1,
                      tail & ((1 << 36) - 1), bytes(data[18:34]))


@dataclass(frozen=True)
class FlacFrameInfo:
    block_size: int
    sample_rate: int          # 0: not in the frame header (see STREAMINFO)
    channels: int
    bits_per_sample: int      # 0: not in the frame header


def _utf8_number_length(first: int) -> int:
    """Bytes of FLAC's UTF-8-style coded frame/sample number, from its first byte."""
    if first < 0x80:
        return 1
    length = 0
    while first & (0x80 >> length):
        length += 1
    if not 2 <= length <= 7:
        raise ValueError("bad coded number")
    return length


def _coded_number(value: int) -> bytes:
    """FLAC's UTF-8-style coding of a frame or sample number (up to 36 bits)."""
    if value < 0x80:
        return bytes([value])
    length = next(n for n in range(2, 8) if value < 1 << (5 * n + 1) or n == 7)
    first = ((0xFF << (8 - length)) & 0xFF) | (value >> (6 * (length - 1)))
    return bytes([first] + [0x80 | ((value >> (6 * i)) & 0x3F)
                            for i in reversed(range(length - 1))])


def _renumbered(frame: bytes, expected: int) -> bytes:
    """`frame` with `expected` as its frame (or sample) number; itself when it has it."""
    length = _utf8_number_length(frame[4])
    number = frame[4] if length == 1 else frame[4] & ((1 << (7 - length)) - 1)
    for byte in frame[5:4 + length]:
        number = (number << 6) | (byte & 0x3F)
    if number == expected:
        return frame
    size_code, rate_code = frame[2] >> 4, frame[2] & 0xF
    end = 4 + length + {6: 1, 7: 2}.get(size_code, 0) + {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    header = bytes(frame[:4]) + _coded_number(expected) + bytes(frame[4 + length:end])
    body = header + bytes([flac_crc8(header)]) + bytes(frame[end + 1:-2])
    return body + flac_crc16(body).to_bytes(2, "big")


def parse_frame_info(frame: bytes) -> FlacFrameInfo:
    """Block size, rate, channels and bit depth from a FLAC frame's header."""
    try:
        if frame[0] != 0xFF or frame[1] & 0xFE != 0xF8:
            raise ValueError("no frame sync")
        size_code, rate_code = frame[2] >> 4, frame[2] & 0xF
        channel_code, bits_code = frame[3] >> 4, (frame[3] >> 1) & 0x7
        pos = 4 + _utf8_number_length(frame[4])
        if size_code == 6:
            block_size, pos = frame[pos] + 1, pos + 1
        elif size_code == 7:
            block_size, pos = int.from_bytes(frame[pos:pos + 2], "big") + 1, pos + 2
        elif size_code == 1:
            block_size = 192
        elif 2 <= size_code <= 5:
            block_size = 576 << (size_code - 2)
        elif size_code >= 8:
            block_size = 256 << (size_code - 8)
        else:
            raise ValueError(f"reserved block size code {size_code}")
        if rate_code == 12:
            sample_rate = frame[pos] * 1000
        elif rate_code in (13, 14):
            sample_rate = int.from_bytes(frame[pos:pos + 2], "big") * (10 if rate_code == 14 else 1)
        else:
            sample_rate = _RATES.get(rate_code, 0)
        if channel_code > 10:
            raise ValueError(f"reserved channel assignment {channel_code}")
    except (IndexError, ValueError) as exc:
        raise FormatError(f"flac: packet does not start with a valid FLAC frame header "
                          f"({bytes(frame[:8]).hex()}): {exc}") from None
    channels = channel_code + 1 if channel_code < 8 else 2
    return FlacFrameInfo(block_size, sample_rate, channels, _BITS.get(bits_code, 0))


def _widen(bounds: tuple[int, int] | None, value: int) -> tuple[int, int]:
    return (value, value) if bounds is None else (min(bounds[0], value), max(bounds[1], value))


class FlacFileWriter:
    """Writes "fLaC" + STREAMINFO + frames to a seekable binary file; close() fixes the header."""

    def __init__(self, file: BinaryIO, first_frame: bytes, streaminfo: bytes | None = None) -> None:
        if streaminfo:
            self._given = parse_streaminfo(streaminfo)
            rate, channels, bits = (self._given.sample_rate, self._given.channels,
                                    self._given.bits_per_sample)
        else:
            self._given = None
            info = parse_frame_info(first_frame)
            if not info.sample_rate or not info.bits_per_sample:
                raise FormatError("flac: packets without STREAMINFO (Packet.extradata) whose frame "
                                  "headers do not state the sample rate and bit depth")
            rate, channels, bits = info.sample_rate, info.channels, info.bits_per_sample
        self.sample_rate, self.channels, self.bits_per_sample = rate, channels, bits
        self.total_samples = 0
        self.frames = 0
        self._blocks: tuple[int, int] | None = None     # (min, max) block size, last excluded
        self._last_block: int | None = None
        self._frames: tuple[int, int] | None = None     # (min, max) frame bytes
        self._file = file
        self._start = file.tell()
        file.write(_MAGIC + _LAST_BLOCK_STREAMINFO + self._streaminfo().pack())

    def write(self, frame: bytes) -> int:
        """Append one frame (renumbered when it does not follow on); returns its block size
        in samples."""
        block = parse_frame_info(frame).block_size
        variable = frame[1] & 0x01          # numbered by sample, not by frame
        frame = _renumbered(frame, self.total_samples if variable else self.frames)
        self.frames += 1
        if self._last_block is not None:        # STREAMINFO's minimum excludes the last block
            self._blocks = _widen(self._blocks, self._last_block)
        self._last_block = block
        self._frames = _widen(self._frames, len(frame))
        self.total_samples += block
        self._file.write(frame)
        return block

    def _streaminfo(self) -> StreamInfo:
        blocks = self._blocks
        if self._last_block is not None:
            blocks = (blocks[0], max(blocks[1], self._last_block)) if blocks \
                else (self._last_block, self._last_block)
        blocks = blocks or (16, 16)                # the smallest legal block size, until known
        frames = self._frames or (0, 0)            # 0 = unknown
        given = self._given
        # The source's MD5 still holds only if exactly its samples were written.
        md5 = given.md5 if given is not None and given.total_samples == self.total_samples \
            else _NO_MD5
        return StreamInfo(max(blocks[0], 16), max(blocks[1], 16), frames[0], frames[1],
                          self.sample_rate, self.channels, self.bits_per_sample,
                          self.total_samples, md5)

    def close(self) -> None:
        """Rewrite STREAMINFO with the counted values (the caller closes the file)."""
        end = self._file.tell()
        self._file.seek(self._start + len(_MAGIC) + len(_LAST_BLOCK_STREAMINFO))
        self._file.write(self._streaminfo().pack())
        self._file.seek(end)
