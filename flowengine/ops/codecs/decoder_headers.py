"""Frame-header arithmetic the decoder needs to cut and check a byte stream.

FFmpeg's parsers find frames but do not say where the bytes came from, and
they glue damaged data onto the frame before it. These helpers read the few
header fields that tell how long a frame must be (MP3, ADTS), whether an MP3
frame is a Xing/Info metadata frame, how long an ID3v2 tag is, and what a
FLAC frame header says (validated by its CRC-8), so the decoder can split,
attribute and report bad data by byte offset.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "mp3_frame_length", "is_mp3_info_frame", "adts_frame_length", "id3v2_length", "same_stream",
    "FlacFrameHeader", "parse_flac_frame_header", "flac_frame_end", "flac_crc_ends",
    "flac_crc8", "flac_crc16", "FLAC_MAX_HEADER_BYTES",
]

# Bitrates in kbit/s by (MPEG-1?, layer) and index 1..14 (index 0 is free format).
_MP3_BITRATES = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_BITRATES[(False, 3)] = _MP3_BITRATES[(False, 2)]
# Sample rates by version bits (0 = MPEG-2.5, 2 = MPEG-2, 3 = MPEG-1).
_MP3_RATES = {0: (11025, 12000, 8000), 2: (22050, 24000, 16000), 3: (44100, 48000, 32000)}


def mp3_frame_length(header: bytes) -> int | None:
    """Bytes in the MPEG audio frame starting with `header`, or None if unknown/invalid.

    Free-format frames (bitrate index 0) have no length in the header: None.
    """
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version = (header[1] >> 3) & 3
    layer = 4 - ((header[1] >> 1) & 3)
    bitrate_index = header[2] >> 4
    rate_index = (header[2] >> 2) & 3
    if version == 1 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    mpeg1 = version == 3
    bitrate = _MP3_BITRATES[(mpeg1, layer)][bitrate_index - 1] * 1000
    rate = _MP3_RATES[version][rate_index]
    padding = (header[2] >> 1) & 1
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    if layer == 3 and not mpeg1:
        return 72 * bitrate // rate + padding
    return 144 * bitrate // rate + padding


def is_mp3_info_frame(frame: bytes) -> bool:
    """True for a Xing/Info/VBRI frame: a valid MP3 frame holding stream metadata, not audio."""
    if len(frame) < 40:
        return False
    mpeg1 = (frame[1] >> 3) & 3 == 3
    mono = frame[3] >> 6 == 3
    side_info = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    tag = frame[4 + side_info:8 + side_info]
    return tag in (b"Xing", b"Info") or frame[36:40] == b"VBRI"


def adts_frame_length(header: bytes) -> int | None:
    """Bytes in the ADTS frame starting with `header` (7 or 9 header bytes included), or None."""
    if len(header) < 6 or header[0] != 0xFF or header[1] & 0xF6 != 0xF0:
        return None
    length = ((header[3] & 3) << 11) | (header[4] << 3) | (header[5] >> 5)
    return length if length >= 7 else None


def same_stream(codec: str, first: bytes, second: bytes) -> bool:
    """Whether two MP3 / ADTS frame headers belong to the same stream (version, layer or
    profile, rate, channels: MP3 mono or not, ADTS its channel configuration)."""
    if codec == "mp3":      # ... and mono or not (stereo and joint stereo may alternate)
        return (mp3_frame_length(second) is not None and first[1] == second[1]
                and first[2] & 0x0C == second[2] & 0x0C
                and (first[3] >> 6 == 3) == (second[3] >> 6 == 3))
    return (adts_frame_length(second) is not None and first[1] & 0xF6 == second[1] & 0xF6
            and first[2] & 0xFD == second[2] & 0xFD and first[3] & 0xC0 == second[3] & 0xC0)


def id3v2_length(head: bytes) -> int | None:
    """Total bytes of the ID3v2 tag at the start of `head` (10+ bytes needed), or None if none."""
    if len(head) < 10 or head[:3] != b"ID3" or any(b & 0x80 for b in head[6:10]):
        return None
    size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
    footer = 10 if head[5] & 0x10 else 0
    return 10 + size + footer


def _crc_table(poly: int, bits: int) -> tuple[int, ...]:
    """MSB-first CRC lookup table (FLAC: CRC-8 poly 0x07, CRC-16 poly 0x8005)."""
    top, mask = 1 << (bits - 1), (1 << bits) - 1
    table = []
    for byte in range(256):
        crc = byte << (bits - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & mask if crc & top else (crc << 1) & mask
        table.append(crc)
    return tuple(table)


_CRC8 = _crc_table(0x07, 8)
_CRC16 = _crc_table(0x8005, 16)


def flac_crc8(data: bytes) -> int:
    """FLAC's CRC-8 of `data` (a frame header's, stored after it)."""
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


def flac_crc16(data: bytes) -> int:
    """FLAC's CRC-16 of `data` (a whole frame's, stored at its end)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc
FLAC_MAX_HEADER_BYTES = 16


@dataclass(frozen=True)
class FlacFrameHeader:
    """The fields of a FLAC frame header that link one frame to the next."""

    length: int          # header bytes, CRC-8 included
    variable: bool       # blocking strategy: number counts samples (True) or frames (False)
    number: int          # frame number, or first sample number when variable
    block_size: int
    stream_key: tuple    # fields that stay constant within a stream (rate, channel count, bits)

    def follows(self, previous: "FlacFrameHeader") -> int:
        """How many frames lie between `previous` and this one (0 = next in sequence), -1 if none."""
        if self.stream_key != previous.stream_key:
            return -1
        step = previous.block_size if previous.variable else 1
        expected = previous.number + step
        if self.number < expected:
            return -1
        return (self.number - expected) // step


def _flac_block_size(code: int, extra: int) -> int:
    if code == 1:
        return 192
    if 2 <= code <= 5:
        return 576 << (code - 2)
    if code in (6, 7):
        return extra + 1
    return 256 << (code - 8)


def parse_flac_frame_header(buf, pos: int) -> FlacFrameHeader | None | bool:
    """Parse the FLAC frame header at buf[pos:]: the header, None if invalid, False if more bytes are needed."""
    end = len(buf)
    if end - pos < 6:
        return False
    if buf[pos] != 0xFF or buf[pos + 1] not in (0xF8, 0xF9):
        return None
    b2, b3 = buf[pos + 2], buf[pos + 3]
    size_code, rate_code = b2 >> 4, b2 & 0x0F
    channels_code, bits_code = b3 >> 4, (b3 >> 1) & 7
    if size_code == 0 or rate_code == 15 or channels_code > 10 or bits_code == 3 or b3 & 1:
        return None
    first = buf[pos + 4]
    if first < 0x80:
        extra_bytes, number = 0, first
    elif 0xC0 <= first < 0xFF:
        extra_bytes = 1
        while first & (0x40 >> extra_bytes):
            extra_bytes += 1
        number = first & (0x3F >> extra_bytes)
    else:
        return None
    i = pos + 5
    if end - i < extra_bytes:
        return False
    for _ in range(extra_bytes):
        if buf[i] & 0xC0 != 0x80:
            return None
        number = (number << 6) | (buf[i] & 0x3F)
        i += 1
    size_bytes = 1 if size_code == 6 else 2 if size_code == 7 else 0
    rate_bytes = 1 if rate_code == 12 else 2 if rate_code in (13, 14) else 0
    if end - i < size_bytes + rate_bytes + 1:
        return False
    size_extra = int.from_bytes(bytes(buf[i:i + size_bytes]), "big") if size_bytes else 0
    rate_extra = int.from_bytes(bytes(buf[i + size_bytes:i + size_bytes + rate_bytes]), "big")
    i += size_bytes + rate_bytes
    if flac_crc8(buf[pos:i]) != buf[i]:
        return None
    variable = bool(buf[pos + 1] & 1)
    # Codes 8-10 are stereo coded as left/side, right/side or mid/side: the encoder
    # picks one per frame, so only the channel count identifies the stream.
    channels = channels_code + 1 if channels_code < 8 else 2
    return FlacFrameHeader(length=i + 1 - pos, variable=variable, number=number,
                           block_size=_flac_block_size(size_code, size_extra),
                           stream_key=(variable, rate_code, rate_extra, channels, bits_code))


def flac_frame_end(data: bytes, header_length: int) -> int | None:
    """Where the FLAC frame at the start of `data` ends, found by its CRC-16 footer, or None.

    Used only after damage (a frame followed by junk, or by nothing when whole
    frames were lost): a running CRC over a frame including its stored CRC-16
    is zero at the frame's end. It is also zero by chance about once in 64 KiB,
    so a zero where a frame sync code (or the end of `data`) follows is
    preferred; without one, the first zero is the best guess.
    """
    first = None
    crc = 0
    end = len(data)
    for i, byte in enumerate(data):
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
        if crc == 0 and i + 1 > header_length + 2:
            if i + 1 == end or (data[i + 1] == 0xFF and i + 2 < end and data[i + 2] in (0xF8, 0xF9)):
                return i + 1
            if first is None:
                first = i + 1
    return first


def flac_crc_ends(data: bytes, header_length: int):
    """Every position where the FLAC frame at the start of `data` may end: where a running
    CRC-16 over it (its stored CRC included) is zero, in order. Only after damage: one of
    them is the frame's end, the others are chance (about one in 64 KiB)."""
    crc = 0
    for i, byte in enumerate(data):
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
        if crc == 0 and i + 1 > header_length + 2:
            yield i + 1
