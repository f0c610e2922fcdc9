"""ADTS framing for AAC: the 7-byte header that makes each raw AAC frame self-describing.

FFmpeg's AAC encoder emits raw access units plus an AudioSpecificConfig (the
codec extradata). Browsers (`audio/aac`) and FFmpeg's `aac` demuxer/parser want
ADTS instead: every frame prefixed with a header carrying profile, rate index,
channel configuration and frame length. This module converts between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowengine.errors import CodecError

__all__ = [
    "AAC_SAMPLE_RATES", "ADTS_HEADER_BYTES", "ADTS_MAX_FRAME_BYTES",
    "AudioSpecificConfig", "parse_audio_specific_config", "AdtsHeader", "parse_adts_header",
    "AdtsFramer",
]

# MPEG-4 sampling frequency index -> rate (ISO/IEC 14496-3, 1.6.3.4).
AAC_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000,
                    11025, 8000, 7350)
ADTS_HEADER_BYTES = 7
ADTS_MAX_FRAME_BYTES = (1 << 13) - 1     # frame_length is a 13-bit field
_EXPLICIT_RATE = 15
_ESCAPE_OBJECT_TYPE = 31


@dataclass(frozen=True)
class AudioSpecificConfig:
    """The part of an MPEG-4 AudioSpecificConfig that ADTS can carry."""

    object_type: int          # 2 = AAC LC
    sample_rate_index: int
    sample_rate: int
    channel_config: int


class _BitReader:
    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._left = len(data) * 8

    def read(self, bits: int) -> int:
        if bits > self._left:
            raise ValueError("AudioSpecificConfig is truncated")
        self._left -= bits
        return (self._value >> self._left) & ((1 << bits) - 1)


def parse_audio_specific_config(asc: bytes) -> AudioSpecificConfig:
    """Read object type, rate and channel configuration; CodecError if ADTS cannot express them."""
    try:
        reader = _BitReader(bytes(asc))
        object_type = reader.read(5)
        if object_type == _ESCAPE_OBJECT_TYPE:
            object_type = 32 + reader.read(6)
        rate_index = reader.read(4)
        explicit_rate = reader.read(24) if rate_index == _EXPLICIT_RATE else None
        channel_config = reader.read(4)
    except ValueError as exc:
        raise CodecError(f"aac: cannot read AudioSpecificConfig {bytes(asc).hex()!r}: {exc}") from None
    if explicit_rate is not None or rate_index >= len(AAC_SAMPLE_RATES):
        raise CodecError(f"aac: ADTS needs a standard sample rate (one of {AAC_SAMPLE_RATES}), "
                         f"the AudioSpecificConfig has rate index {rate_index}"
                         + (f" ({explicit_rate} Hz)" if explicit_rate is not None else ""))
    if not 1 <= object_type <= 4:
        raise CodecError(f"aac: ADTS carries object types 1-4 (Main, LC, SSR, LTP), got {object_type}")
    if channel_config == 0:
        raise CodecError("aac: ADTS needs a channel configuration 1-7; this stream defines its "
                         "channels in a program config element (channel configuration 0)")
    return AudioSpecificConfig(object_type, rate_index, AAC_SAMPLE_RATES[rate_index], channel_config)


@dataclass(frozen=True)
class AdtsHeader:
    """Fields of one ADTS header (fixed and variable parts)."""

    mpeg_version: int         # 4 or 2
    protection_absent: bool
    object_type: int          # profile + 1
    sample_rate_index: int
    channel_config: int
    frame_length: int         # header + payload bytes
    buffer_fullness: int
    raw_data_blocks: int      # number_of_raw_data_blocks_in_frame + 1

    @property
    def sample_rate(self) -> int:
        return AAC_SAMPLE_RATES[self.sample_rate_index]

    @property
    def header_length(self) -> int:
        return ADTS_HEADER_BYTES if self.protection_absent else ADTS_HEADER_BYTES + 2


def parse_adts_header(data: bytes | bytearray | memoryview, offset: int = 0) -> AdtsHeader | None:
    """The ADTS header at `offset`, or None if the bytes there are not one."""
    if len(data) - offset < ADTS_HEADER_BYTES:
        return None
    h = int.from_bytes(data[offset:offset + ADTS_HEADER_BYTES], "big")   # 56 bits
    if (h >> 44) != 0xFFF or (h >> 41) & 0b11 != 0:     # sync word, layer == 0
        return None
    rate_index = (h >> 34) & 0xF
    frame_length = (h >> 13) & 0x1FFF
    if rate_index >= len(AAC_SAMPLE_RATES) or frame_length < ADTS_HEADER_BYTES:
        return None
    return AdtsHeader(
        mpeg_version=2 if (h >> 43) & 1 else 4,
        protection_absent=bool((h >> 40) & 1),
        object_type=((h >> 38) & 0b11) + 1,
        sample_rate_index=rate_index,
        channel_config=(h >> 30) & 0b111,
        frame_length=frame_length,
        buffer_fullness=(h >> 2) & 0x7FF,
        raw_data_blocks=(h & 0b11) + 1,
    )


class AdtsFramer:
    """Prefixes raw AAC frames with ADTS headers built from the encoder's extradata."""

    def __init__(self, audio_specific_config: bytes) -> None:
        self.config = parse_audio_specific_config(audio_specific_config)
        cfg = self.config
        # Everything but frame_length is constant for a stream: precompute it.
        # sync(12) id=0 (MPEG-4) layer(2)=0 protection_absent=1 | profile(2) rate(4) private(1)
        # channel_config(3) original(1) home(1) copyright_id(1) copyright_start(1) | length(13)
        # buffer_fullness(11)=0x7FF (VBR) | raw_data_blocks-1 (2)=0
        self._fixed = ((0xFFF << 44) | (1 << 40) | ((cfg.object_type - 1) << 38)
                       | (cfg.sample_rate_index << 34) | (cfg.channel_config << 30)
                       | (0x7FF << 2))

    def header(self, payload_bytes: int) -> bytes:
        """The 7-byte header for a raw frame of `payload_bytes` bytes."""
        frame_length = payload_bytes + ADTS_HEADER_BYTES
        if frame_length > ADTS_MAX_FRAME_BYTES:
            raise CodecError(f"aac: a {payload_bytes}-byte frame does not fit in ADTS "
                             f"(at most {ADTS_MAX_FRAME_BYTES - ADTS_HEADER_BYTES} payload bytes); "
                             f"lower the bitrate")
        return (self._fixed | (frame_length << 13)).to_bytes(ADTS_HEADER_BYTES, "big")

    def frame(self, payload: bytes) -> bytes:
        """`payload` with its ADTS header in front."""
        return self.header(len(payload)) + payload
