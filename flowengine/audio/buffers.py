"""The two buffers that flow through a pipeline: PCM frames and codec packets.

Timestamps are integers in `time_base` units (a Fraction). For PCM the usual
time base is 1/sample_rate, so the next frame's pts is pts + samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

import numpy as np

from flowengine.audio.format import AudioFormat, check_pcm, convert

DEFAULT_STREAM = "0"


@lru_cache(maxsize=256, typed=True)
def time_base_fraction(num: int, den: int) -> Fraction:
    """Fraction(num, den), built once per distinct time base: a Fraction costs a gcd and
    several Python calls, and per-buffer code asks for the same few time bases all the time
    (Fractions are immutable, so sharing one is safe)."""
    return Fraction(num, den)


def round_ratio(num: int, den: int) -> int:
    """round(Fraction(num, den)) (halves to even) in integer arithmetic; den > 0."""
    whole, rest = divmod(num, den)
    return whole + 1 if 2 * rest > den or (2 * rest == den and whole & 1) else whole


def samples_from_ticks(pts: int, time_base: Fraction, sample_rate: int) -> int:
    """A timestamp in `time_base` units as a sample position at `sample_rate` (rounded,
    halves to even), without Fraction arithmetic when the time base is 1/sample_rate."""
    num, den = time_base.numerator, time_base.denominator
    if num == 1 and den == sample_rate:
        return pts
    return round_ratio(pts * num * sample_rate, den)

PACKET_FLAG_KEY = 1
PACKET_FLAG_CORRUPT = 2


@dataclass
class AudioFrame:
    """A block of PCM samples of one stream, in a known format."""

    data: np.ndarray
    format: AudioFormat
    pts: int | None = None
    time_base: Fraction | None = None
    stream: str = DEFAULT_STREAM

    def __post_init__(self) -> None:
        self.data = check_pcm(self.data, self.format, where=f"stream {self.stream!r}")
        time_base = self.time_base
        if time_base is None:
            self.time_base = time_base_fraction(1, self.format.sample_rate)
        elif type(time_base) is not Fraction:
            self.time_base = Fraction(time_base)

    @classmethod
    def from_checked(cls, data: np.ndarray, format: AudioFormat, pts: int | None,
                     time_base: Fraction, stream: str) -> "AudioFrame":
        """An AudioFrame from parts the caller has already validated, without checking again.

        For decoders of trusted-shape input (the wire decoder builds `data` with
        `format`'s dtype and shape from a length-checked buffer, and `time_base`
        is already a Fraction): skips the re-validation of `__post_init__`, which
        costs as much as the rest of a message decode. Anyone else: use the
        normal constructor.
        """
        frame = cls.__new__(cls)
        frame.data, frame.format, frame.pts = data, format, pts
        frame.time_base, frame.stream = time_base, stream
        return frame

    @property
    def samples(self) -> int:
        """Samples per channel."""
        return int(self.data.shape[1] if self.format.planar else self.data.shape[0])

    @property
    def duration(self) -> float:
        return self.samples / self.format.sample_rate

    @property
    def end_pts(self) -> int | None:
        """pts of the sample after this frame, in time_base units."""
        if self.pts is None:
            return None
        return self.pts + int(round(self.samples / self.format.sample_rate / self.time_base))

    def to_format(self, fmt: AudioFormat) -> "AudioFrame":
        """The same audio in another sample type / layout (not rate or channels)."""
        if fmt == self.format:
            return self
        return AudioFrame(convert(self.data, self.format, fmt), fmt, self.pts, self.time_base,
                          self.stream)

    def planar(self) -> np.ndarray:
        """Samples as a (channels, samples) array, without copying when already planar."""
        return self.data if self.format.planar else self.data.T


@dataclass
class Packet:
    """One encoded codec frame (an MP3 frame, an ADTS AAC frame, an Opus packet, ...)."""

    data: bytes
    time_base_num: int = 1
    time_base_den: int = 48000
    pts: int | None = None
    dts: int | None = None
    duration: int | None = None
    flags: int = 0
    codec: str = ""
    stream: str = DEFAULT_STREAM
    # Codec parameters a decoder needs that are not in the bytes (e.g. Opus header).
    extradata: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.data, (bytearray, memoryview)):
            self.data = bytes(self.data)
        if not isinstance(self.data, bytes):
            raise TypeError(f"Packet data must be bytes, got {type(self.data).__name__}")

    @property
    def time_base(self) -> Fraction:
        return time_base_fraction(self.time_base_num, self.time_base_den)

    @property
    def is_key(self) -> bool:
        return bool(self.flags & PACKET_FLAG_KEY)

    def __len__(self) -> int:
        return len(self.data)

    def __bytes__(self) -> bytes:
        return self.data


CodecPacket = Packet
