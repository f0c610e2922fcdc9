"""Encoder and decoder configurations, with the original library's names and defaults.

Codec names are case-insensitive; "pcm" is an alias of "wav".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowengine.errors import FormatError, UnknownCodecError
from flowengine.audio.format import AudioFormat, as_format

__all__ = [
    "CODECS", "normalize_codec",
    "Mp3EncoderConfig", "AacEncoderConfig", "OpusEncoderConfig", "FlacEncoderConfig", "WavEncoderConfig",
    "Mp3DecoderConfig", "AacDecoderConfig", "OpusDecoderConfig", "FlacDecoderConfig", "WavDecoderConfig",
    "ENCODER_CONFIGS", "DECODER_CONFIGS",
]

CODECS = ("mp3", "aac", "opus", "flac", "wav")
_CODEC_ALIASES = {"pcm": "wav", "adts": "aac", "libopus": "opus", "libmp3lame": "mp3"}


def normalize_codec(name: str) -> str:
    """Canonical codec name ("MP3" -> "mp3", "pcm" -> "wav"), or UnknownCodecError."""
    key = str(name).strip().lower()
    key = _CODEC_ALIASES.get(key, key)
    if key not in CODECS:
        raise UnknownCodecError(
            f"unknown codec {name!r}: expected one of {', '.join(CODECS)} (alias pcm for wav)")
    return key


def _check_chunk(chunk_samples: int) -> int:
    """chunk_samples as a plain int (numpy integers accepted, as AudioFormat accepts them)."""
    if isinstance(chunk_samples, bool) or not isinstance(chunk_samples, (int, np.integer)) \
            or chunk_samples <= 0:
        raise FormatError(f"chunk_samples must be a positive integer, got {chunk_samples!r}")
    return int(chunk_samples)


@dataclass
class _EncoderConfig:
    input_format: AudioFormat | None = None
    chunk_samples: int = 1024

    def __post_init__(self) -> None:
        self.input_format = as_format(self.input_format)
        self.chunk_samples = _check_chunk(self.chunk_samples)


@dataclass
class Mp3EncoderConfig(_EncoderConfig):
    chunk_samples: int = 1152
    bitrate: int = 128000
    # LAME quality 0 (best, slowest) .. 9 (worst, fastest). 3 is LAME's and FFmpeg's own
    # default; 2 ("high quality") costs ~1.8x the encode time for a barely audible gain.
    quality: int = 3
    # "auto" uses the bundled fast LAME (lameenc) when installed, else PyAV's libmp3lame.
    backend: str = "auto"


@dataclass
class AacEncoderConfig(_EncoderConfig):
    chunk_samples: int = 1024
    bitrate: int | None = None


@dataclass
class OpusEncoderConfig(_EncoderConfig):
    chunk_samples: int = 960
    bitrate: int = 96000


@dataclass
class FlacEncoderConfig(_EncoderConfig):
    chunk_samples: int = 4608
    compression_level: int | None = None


@dataclass
class WavEncoderConfig(_EncoderConfig):
    chunk_samples: int = 1024


@dataclass
class _DecoderConfig:
    chunk_samples: int = 1024
    packet_time_base_den: int = 48000

    def __post_init__(self) -> None:
        self.chunk_samples = _check_chunk(self.chunk_samples)
        if not isinstance(self.packet_time_base_den, int) or self.packet_time_base_den <= 0:
            raise FormatError(
                f"packet_time_base_den must be a positive integer, got {self.packet_time_base_den!r}")


@dataclass
class Mp3DecoderConfig(_DecoderConfig):
    pass


@dataclass
class AacDecoderConfig(_DecoderConfig):
    pass


@dataclass
class OpusDecoderConfig(_DecoderConfig):
    chunk_samples: int = 960
    extradata: bytes | None = None


@dataclass
class FlacDecoderConfig(_DecoderConfig):
    pass


@dataclass
class WavDecoderConfig:
    """Raw interleaved PCM bytes in `output_format`'s sample type come in."""

    output_format: AudioFormat
    chunk_samples: int = 1024

    def __post_init__(self) -> None:
        self.output_format = as_format(self.output_format)
        if self.output_format is None:
            raise FormatError("WavDecoderConfig needs output_format: the raw PCM bytes carry no header")
        self.chunk_samples = _check_chunk(self.chunk_samples)


ENCODER_CONFIGS = {"mp3": Mp3EncoderConfig, "aac": AacEncoderConfig, "opus": OpusEncoderConfig,
                   "flac": FlacEncoderConfig, "wav": WavEncoderConfig}
DECODER_CONFIGS = {"mp3": Mp3DecoderConfig, "aac": AacDecoderConfig, "opus": OpusDecoderConfig,
                   "flac": FlacDecoderConfig, "wav": WavDecoderConfig}
